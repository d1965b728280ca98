"""The `driftloop` command line."""
