import ArgumentParser

DPCoordCommand.main()
