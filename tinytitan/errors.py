"""One error type for bad input: the CLI prints its message on one line and exits 2."""


class TinytitanError(Exception):
    """A user-facing error. The message names the thing that is wrong and the fix."""
