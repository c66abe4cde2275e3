"""Pipeline stages, one module each; see `agmask.pipeline` for the contract."""
