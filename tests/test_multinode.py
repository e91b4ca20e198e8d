"""Several nodes on one host: NNODES=2 x NGPU=1 with c10d rendezvous on 127.0.0.1 trains
exactly as NGPU=2 on one node.

Each "node" gets one thread (OMP_NUM_THREADS=1), as each process of the reference run has: the
launcher would give a lone process both of this host's cores, and a CPU matmul split over two
threads can round differently (seen on this VM's CPU: losses differing in the 7th digit).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.helpers import DEBUG_CONFIG, REPO, N, small_run_overrides, train_losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_one_process_match_one_node_of_two(uninterrupted, tmp_path):
    port = str(free_port())
    overrides = small_run_overrides(tmp_path, steps=2 * N, interval=N)
    nodes = []
    for node in range(2):
        env = {**os.environ, "NGPU": "1", "NNODES": "2", "NODE_RANK": str(node), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "RDZV_ID": f"test-{port}", "CONFIG_FILE": str(DEBUG_CONFIG),
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        nodes.append(subprocess.Popen([sys.executable, "-m", "tinytitan.launcher.launch", *overrides], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert train_losses(tmp_path) == train_losses(uninterrupted)
