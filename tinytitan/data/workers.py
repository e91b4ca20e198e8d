"""Loader worker processes: each runs one Reader and sends finished batches to the loader.

Kept free of torch so that a spawned worker starts in a fraction of a second.
"""

from __future__ import annotations

import os
import queue
import signal
import traceback
from dataclasses import dataclass

import numpy as np

from tinytitan import faults
from tinytitan.data.mixture import Reader, Sampler
from tinytitan.errors import TinytitanError


@dataclass
class WindowSchedule:
    """Which global window indices batch ``b`` (counted since the loader (re)started) covers."""

    windows_base: int  # global windows consumed before the (re)start
    dp_world_size: int
    dp_rank: int
    batch_size: int

    def windows(self, b: int) -> np.ndarray:
        first = self.windows_base + b * self.dp_world_size * self.batch_size + self.dp_rank * self.batch_size
        return np.arange(first, first + self.batch_size, dtype=np.int64)


def make_backend(spec: dict):
    if spec["format"] == "tokens":
        from tinytitan.data.shards import TokensBackend

        return TokensBackend(spec["prepared_dir"])
    from tinytitan.data.text_backend import TextBackend

    return TextBackend(spec["encoder"], spec["budget"])


def worker_main(
    plan,
    backend_spec: dict,
    seq_len: int,
    reader_id: int,
    n_readers: int,
    lanes_state: dict,
    schedule: WindowSchedule,
    first_b: int,
    step: int,
    weights: list[float],
    out: queue.Queue,
    parent_pid: int,
) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    faults.die_with_parent(signal.SIGKILL)  # a killed rank leaves no worker behind
    if os.getppid() != parent_pid:
        return  # the rank died before the request above: it cannot reach this worker any more
    try:
        reader = Reader(plan, make_backend(backend_spec), seq_len, reader_id, n_readers)
        reader.load(lanes_state)
        sampler = Sampler(plan.seed, weights)
        b = first_b
        sent_errors = 0
        while True:
            arr = reader.batch(sampler.sources(schedule.windows(b)))
            new_errors = reader.errors[sent_errors:]
            sent_errors = len(reader.errors)
            item = ("batch", b, arr, reader.state(), new_errors)
            while True:
                try:
                    out.put(item, timeout=5.0)
                    break
                except queue.Full:
                    if os.getppid() != parent_pid:
                        return
            b += step
    except TinytitanError as e:
        out.put(("error", "TinytitanError", str(e)))
    except KeyboardInterrupt:
        return
    except BaseException as e:  # noqa: BLE001 - forwarded to the loader
        out.put(("error", type(e).__name__, f"{e}\n{traceback.format_exc()}"))
