"""The ranks' output as torchrun tees it, with the victims' tracebacks cut to one line each.

When a rank hangs or dies, its peers fail inside a collective (a gloo timeout, a closed
connection, an NCCL error): 50 lines each of traceback that say only "a peer did not
answer". The cause is named by the supervisor; these tracebacks become one line each,
their exception. Any other traceback passes through whole.

torchrun's tee prefixes a rank's lines with ``[rank<local>]:``, and torch.distributed's
excepthook prefixes every line of a traceback with ``[rank<global>]: `` (blank lines
excepted), so a traceback is the run of such lines from one rank.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TEE = re.compile(r"^\[(?:default|rank)\d+\]:")
EXCEPTHOOK = re.compile(r"^\[rank\d+\]: ")
# What a collective raises when a peer stopped answering or went away (gloo on CPU, NCCL on GPU).
PEER_FAILURE = re.compile(
    r"Timed out waiting|Connection closed by peer|Connection reset by peer|DistBackendError|DistNetworkError|"
    r"collective operation timeout|NCCL communicator was aborted|remote process exited|Broken pipe",
    re.IGNORECASE,
)
NOT_THE_EXCEPTION = ("Traceback (most recent call last):", "The above exception", "During handling of")
SHORTENED = " (a collective failed: a peer hung or died; traceback left out)"


class RankOutput:
    """Feed it torchrun's stderr line by line; it writes what the user should see."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.blocks: dict[str, list[str]] = {}  # tee prefix -> the traceback lines held so far
        self.drop_peer_failures = False  # after Ctrl-C: the ranks' failures are expected, say nothing

    def feed(self, line: str) -> None:
        tee = TEE.match(line)
        if tee is None:
            self.flush()  # torchrun speaks after a rank exited: its traceback is complete
            self.write(line)
            return
        prefix, body = tee.group(0), line[tee.end() :]
        if EXCEPTHOOK.match(body) or (prefix in self.blocks and not body.strip()):
            self.blocks.setdefault(prefix, []).append(line)
            return
        self.flush(prefix)
        self.write(line)

    def flush(self, prefix: str | None = None) -> None:
        for key in [prefix] if prefix is not None else list(self.blocks):
            lines = self.blocks.pop(key, None)
            if lines:
                self._emit(key, lines)

    def _emit(self, prefix: str, lines: list[str]) -> None:
        failure = peer_failure(lines, prefix)
        if failure is None:
            for line in lines:
                self.write(line)
        elif not self.drop_peer_failures:
            self.write(f"{failure}{SHORTENED}\n")


def peer_failure(lines: list[str], prefix: str) -> str | None:
    """The exception line of a traceback raised by a failed collective, prefixes kept; else None."""
    if not any(line[len(prefix) :].split(": ", 1)[-1].startswith("Traceback") for line in lines):
        return None
    for line in lines:
        body = line[len(prefix) :]
        hook = EXCEPTHOOK.match(body)
        text = body[hook.end() :] if hook else body
        if text[:1].isspace() or not text.strip() or text.startswith(NOT_THE_EXCEPTION):
            continue
        if PEER_FAILURE.search(text):
            return line.rstrip("\n")
    return None
