"""The parts of hang naming that need no training: heartbeats on disk, who is behind, the line, the
victims' tracebacks cut to one line, and the [hang] setting. The launches are in tests/launcher/test_faults.py
(one node) and tests/launcher/test_multinode.py (two)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from tinytitan.errors import TinytitanError
from tinytitan.job_config import Hang
from tinytitan.launcher.hangs import HangReport, Progress, Watch, behind
from tinytitan.launcher.rank_output import SHORTENED, RankOutput
from tinytitan.run import faults
from tinytitan.run.faults import ErrorNote, Heartbeat, PreemptedNote, RankNote
from tinytitan.run.folder import RunFolder

# A victim's traceback as torchrun's tee and torch.distributed's excepthook print it (gloo, CPU).
VICTIM = """\
[rank0]:[rank0]: Traceback (most recent call last):
[rank0]:[rank0]:   File "/work/tinytitan/rank/main.py", line 50, in <module>
[rank0]:[rank0]:     main()
[rank0]:[rank0]:   File "torchtitan/distributed/utils.py", line 58, in _dist_reduce
[rank0]:[rank0]:     return funcol.all_reduce(x, reduceOp=reduceOp, group=mesh).item()
[rank0]:[rank0]:            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
[rank0]:[rank0]: RuntimeError: [third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation to complete
"""
BUG = """\
[rank1]:[rank1]: Traceback (most recent call last):
[rank1]:[rank1]:   File "/work/tinytitan/data/loader.py", line 9, in next
[rank1]:[rank1]:     raise ValueError("bad record")
[rank1]:[rank1]: ValueError: bad record
[rank1]:
[rank1]:[rank1]: The above exception was the direct cause of the following exception:
[rank1]:[rank1]: RuntimeError: loader failed
"""


def beat(rank: int, step: int, phase: str, pid: int | None = None, first_step: int = 1) -> Heartbeat:
    return Heartbeat(rank=rank, host="node-a", pid=pid or 1000 + rank, step=step, phase=phase,
                     since=time.time(), first_step=first_step)  # fmt: skip


def watch(tmp_path, world_size: int = 2, stall: float = 10) -> Watch:
    return Watch(run=RunFolder.at(tmp_path), checkpoints=None, world_size=world_size, stall_seconds=stall,
                 all_stalled_seconds=3 * stall, quiet_seconds=stall / 2, interval_s=1)  # fmt: skip


def write(tmp_path, *beats: Heartbeat) -> None:
    for b in beats:
        path = RunFolder.at(tmp_path).heartbeat(b.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        faults.write_heartbeat(path, b)


def test_notes_are_read_back_typed_and_malformed_ones_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.NOTES_ENV, str(tmp_path))
    faults.note_rank(1)
    faults.note_error(0, "bad seed")
    faults.note_preempted(1, 7, "/run/checkpoint/step-7")
    (tmp_path / "rank-5.json").write_text('{"rank": 5, "pid": "not a pid"}')
    (tmp_path / "error-3.json").write_text("{truncated")
    assert faults.read_notes(tmp_path, RankNote) == [RankNote(rank=1, pid=os.getpid())]
    assert faults.read_notes(tmp_path, ErrorNote) == [ErrorNote(rank=0, message="bad seed")]
    assert faults.read_notes(tmp_path, PreemptedNote) == [PreemptedNote(1, 7, "/run/checkpoint/step-7")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        faults.read_notes(tmp_path, RankNote)[0].pid = 1


def test_a_heartbeat_round_trips_and_another_version_is_ignored(tmp_path):
    b = beat(3, 12, "optimizer")
    write(tmp_path, b)
    path = RunFolder.at(tmp_path).heartbeat(3)
    assert path == tmp_path / ".tinytitan" / "heartbeats" / "rank-3.json"
    assert faults.read_heartbeat(path) == b
    faults.write_heartbeat(path, dataclasses.replace(b, version=99))
    assert faults.read_heartbeat(path) is None


def test_the_ranks_behind_are_those_at_the_earliest_step_and_phase():
    beats = {0: beat(0, 4, "forward/backward"), 1: beat(1, 4, "data"), 2: beat(2, 4, "optimizer"),
             3: beat(3, 4, "data")}  # fmt: skip
    assert [b.rank for b in behind(beats)] == [1, 3]
    assert [b.rank for b in behind({0: beat(0, 5, "data"), 1: beat(1, 4, "step end")})] == [1]
    assert len(behind({0: beat(0, 4, "data"), 1: beat(1, 4, "data")})) == 2  # nobody ahead: everyone


def test_the_hang_line_names_rank_host_pid_step_phase_and_where_the_stack_is():
    report = HangReport([beat(1, 4, "data", pid=77)], 12.4, shown=[1])
    assert (
        report.describe()
        == "rank 1 on host node-a (pid 77) made no progress for 12 s in step 4 (data); its stack is above"
    )
    remote = HangReport([beat(1, 4, "data", pid=77)], 12, remote=[beat(1, 4, "data", pid=77)])
    assert remote.describe().endswith("(data); the stack is in the log of host node-a")
    stopped = HangReport([beat(1, 4, "data", pid=77)], 12, stopped=[1])
    assert stopped.describe().endswith("; rank 1 is stopped (SIGSTOP?), so no stack")
    many = HangReport([beat(r, 4, "data") for r in range(6)], 12, everyone=True, shown=[0])
    assert many.describe() == "every rank (6) made no progress for 12 s in step 4 (data); the stack of rank 0 is above"


def _worker_asleep(name: str) -> None:
    from tinytitan.processes import WORKER_PREFIX, set_process_name

    set_process_name(WORKER_PREFIX + name.removeprefix("tinytitan-data-"))
    time.sleep(60)


def test_a_rank_waiting_for_its_stopped_loader_worker_is_named_with_the_worker():
    """The rank behind sits in its loader's wait (its stack shows only that): the line names the stopped
    worker, found as a child of the rank in state T by the name the loader gives it (tinytitan.data.workers)."""
    import multiprocessing as mp
    import signal

    from tinytitan.processes import process_state, stopped_workers

    worker = mp.get_context("fork").Process(target=_worker_asleep, args=("tinytitan-data-1-0",))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker.pid}/comm").read_text().strip() != "tt-data-1-0" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stopped_workers(os.getpid()) == []  # running
        os.kill(worker.pid, signal.SIGSTOP)
        while process_state(worker.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        found = stopped_workers(os.getpid())
        assert found == [f"data loader worker tinytitan-data-1-0 (pid {worker.pid})"]
    finally:
        worker.kill()
        worker.join()
    report = HangReport([beat(1, 4, "data", pid=77)], 12, shown=[1], stopped_workers=found)
    assert report.describe() == (
        f"rank 1 on host node-a (pid 77) made no progress for 12 s in step 4 (data); its stack is above; its data "
        f"loader worker tinytitan-data-1-0 (pid {worker.pid}) is stopped (SIGSTOP?): the rank waits for it"
    )


def test_no_hang_is_declared_before_every_rank_is_past_its_first_step_or_on_old_heartbeats(tmp_path):
    progress = Progress(watch(tmp_path, stall=10))
    write(tmp_path, beat(0, 4, "forward/backward"), beat(1, 4, "data"))
    progress.read(now=100.0)
    assert progress.stalled(now=105.0, local={0: 1000, 1: 1001}) is None  # not long enough
    assert progress.stalled(now=111.0, local={0: 1000, 1: 1001}) == 11.0
    assert progress.stalled(now=111.0, local={0: 1000, 1: 2001}) is None  # rank 1's file is from an older process
    assert progress.stalled(now=111.0, local={}) is None
    write(tmp_path, beat(1, 4, "data", first_step=4))  # the process's first step: start-up, not watched
    progress.read(now=111.0)
    assert progress.stalled(now=200.0, local={0: 1000, 1: 1001}) is None
    write(tmp_path, beat(1, 4, "checkpoint"))  # a phase that can take minutes
    progress.read(now=111.0)
    assert progress.stalled(now=200.0, local={0: 1000, 1: 1001}) is None
    write(tmp_path, beat(1, 4, "data"))
    progress.read(now=120.0)  # rank 1 moved (checkpoint -> data) at 120
    assert progress.stalled(now=129.0, local={0: 1000, 1: 1001}) is None
    assert progress.stalled(now=130.5, local={0: 1000, 1: 1001}) == 10.5
    assert progress.stalled(now=130.5, local={0: 1000}) == 10.5  # another node's rank needs no local pid
    assert Progress(watch(tmp_path, world_size=3)).stalled(now=1e9, local={0: 1000}) is None  # rank 2 unseen


def test_when_no_rank_is_behind_a_hang_takes_the_collective_timeout(tmp_path):
    """Every rank slow in the same phase (a loaded machine) is not a straggler: no restart before a
    collective would time out."""
    progress = Progress(watch(tmp_path, stall=10))
    write(tmp_path, beat(0, 4, "forward/backward"), beat(1, 4, "forward/backward"))
    progress.read(now=100.0)
    assert progress.stalled(now=125.0, local={0: 1000, 1: 1001}) is None
    assert progress.stalled(now=131.0, local={0: 1000, 1: 1001}) == 31.0


def test_a_victims_traceback_becomes_its_one_exception_line_and_others_pass_whole():
    written: list[str] = []
    out = RankOutput(written.append)
    for line in ["[rank0]:[titan] step 4\n", *VICTIM.splitlines(keepends=True), *BUG.splitlines(keepends=True),
                 "[rank1]:[titan] closing\n", "W1204 torchrun: Sending process 1 closing signal SIGTERM\n"]:  # fmt: skip
        out.feed(line)
    out.flush()
    victim = VICTIM.splitlines()[-1]  # held until rank 0 or torchrun says more: then it is complete
    assert written == ["[rank0]:[titan] step 4\n", *BUG.splitlines(keepends=True), "[rank1]:[titan] closing\n",
                       f"{victim}{SHORTENED}\n", "W1204 torchrun: Sending process 1 closing signal SIGTERM\n"]  # fmt: skip


def test_after_ctrl_c_the_victims_say_nothing():
    written: list[str] = []
    out = RankOutput(written.append)
    out.drop_peer_failures = True
    for line in VICTIM.splitlines(keepends=True):
        out.feed(line)
    out.flush()
    assert written == []


@pytest.mark.parametrize(("stall", "timeout", "effective"), [(-1, 100, 50), (0, 100, 0), (30, 100, 30), (2.5, 5, 2.5)])
def test_stall_seconds_defaults_to_half_the_collective_timeout(stall, timeout, effective):
    Hang(stall_seconds=stall).validate(timeout)
    assert Hang(stall_seconds=stall).effective(timeout) == effective


@pytest.mark.parametrize(("stall", "message"), [(100, "is not below [comm] train_timeout_seconds = 100"),
                                                (-3, "is negative")])  # fmt: skip
def test_a_stall_time_that_cannot_work_is_one_line(stall, message):
    with pytest.raises(TinytitanError, match=r"\[hang\] stall_seconds") as e:
        Hang(stall_seconds=stall).validate(100)
    assert message in str(e.value) and "\n" not in str(e.value)
