DPWorkerCommand.main()
