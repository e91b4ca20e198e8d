"""The launcher: start checks, then torchrun under a supervisor (one process per node)."""
