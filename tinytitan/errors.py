"""One error type for bad input, and the guard that turns it into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class TinytitanError(Exception):
    """A user-facing error. The message names the thing that is wrong and the fix."""


def run_guarded(fn: Callable[[], int]) -> int:
    """Bad input ends in one line on stderr and exit code 2, not a traceback."""
    try:
        return fn()
    except TinytitanError as e:
        print(f"tinytitan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinytitan: interrupted", file=sys.stderr)
        return 130
