"""Several nodes on one host: NNODES=2 x NGPU=1 with c10d rendezvous on 127.0.0.1 trains
exactly as NGPU=2 on one node, also through a hang on one node and the restart of both.

Each "node" gets one thread (OMP_NUM_THREADS=1), as each process of the reference run has: the
launcher would give a lone process both of this host's cores, and a CPU matmul split over two
threads can round differently (seen on this VM's CPU: losses differing in the 7th digit).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, N, small_run_overrides, train_losses

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_one_process_match_one_node_of_two_through_a_hang(uninterrupted, tmp_path):
    """Rank 1 falls asleep fetching the batch of step N+1. The launcher of its node (c10d rendezvous
    decides which: NODE_RANK is ignored) prints its stack and one line; the other node's launcher, reading
    the same heartbeats in the shared run folder, names rank 1 too. Both nodes restart from the step-N
    checkpoint, and the losses equal one node's of two. One thread per process, as `uninterrupted` has
    (with the launcher's default of two here, the losses after the restart differed in the last bit)."""
    port = str(free_port())
    dump = tmp_path / "run"
    overrides = [*small_run_overrides(dump, steps=2 * N, interval=N), "--comm.train_timeout_seconds", "60",
                 "--hang.stall_seconds", "10", "--experimental.custom_import", "tests.hang_in_data"]  # fmt: skip
    nodes = []
    for node in range(2):
        env = {**os.environ, "NGPU": "1", "NNODES": "2", "NODE_RANK": str(node), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "RDZV_ID": f"test-{port}", "CONFIG_FILE": str(DEBUG_CONFIG),
               "MAX_RESTARTS": "1", "TINYTITAN_TEST_HANG": f"1:{N + 1}:{tmp_path / 'hung-once'}",
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        nodes.append(subprocess.Popen([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert train_losses(dump) == train_losses(uninterrupted)

    named = rf"rank 1 on host \S+ \(pid \d+\) made no progress for \d+ s in step {N + 1} \(data\)"
    lines = [re.search(rf"^tinytitan: (.*behind it, )?{named}(.*)$", out, re.MULTILINE) for out in outputs]
    assert all(lines), outputs[0][-3000:] + outputs[1][-3000:]
    hung = [i for i, line in enumerate(lines) if line.group(2).startswith("; its stack is above;")]
    assert len(hung) == 1, [line.group(0) for line in lines]
    stack = outputs[hung[0]][: lines[hung[0]].start()].rsplit("Current thread", 1)[1]
    assert "in sleep_forever_in_data_loading" in stack
    assert "Traceback" not in outputs[0] + outputs[1]
