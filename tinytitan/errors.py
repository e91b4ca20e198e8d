"""One error type for bad input, and the guard that turns it into one line and exit code 2."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable


class TinytitanError(Exception):
    """A user-facing error. The message names the thing that is wrong and the fix."""


# What to do about the operating-system errors a user can fix, by errno.
_OS_FIXES = {
    errno.ENOSPC: "free space on that disk, or write somewhere with more room",
    errno.EDQUOT: "free space within your quota, or write somewhere else",
    errno.EROFS: "that file system is read-only: write to a writable folder",
    errno.EACCES: "check the permissions of that path (or choose a folder you own)",
    errno.EPERM: "check the permissions of that path (or choose a folder you own)",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: check the path",
    errno.EISDIR: "that path is a folder: give a file",
    errno.EIO: "the disk reported an I/O error: check the device, then retry",
}


def describe_os_error(e: OSError) -> str:
    """One line: the path, the cause, the fix (no traceback)."""
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    cause = e.strerror or str(e) or type(e).__name__
    fix = _OS_FIXES.get(e.errno or 0, "check the path and the disk, then retry")
    return f"{paths + ': ' if paths else ''}{cause}; {fix}"


def run_guarded(fn: Callable[[], int]) -> int:
    """Bad input, and file-system failures a user can fix, end in one line and exit code 2, not a traceback."""
    try:
        return fn()
    except TinytitanError as e:
        print(f"tinytitan: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno is None:  # not a file-system error (e.g. a network library's): keep its traceback
            raise
        print(f"tinytitan: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinytitan: interrupted", file=sys.stderr)
        return 130
