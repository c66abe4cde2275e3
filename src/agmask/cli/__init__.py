"""The command line: thin wrappers over `agmask.pipeline` and friends."""
