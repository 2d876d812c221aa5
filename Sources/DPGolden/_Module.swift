// DPGolden: module placeholder until its first source file lands; delete when another file exists.
