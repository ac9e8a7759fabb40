"""Runtimes: where an engine runs. `process` (a supervised local process) or `docker` (a container)."""
