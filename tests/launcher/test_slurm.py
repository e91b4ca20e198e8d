"""util/slurm_multinode.sbatch on a real two-node SLURM cluster on this host (tests/slurm_cluster.py):
a job requeued mid-run resumes from its preemption checkpoint, with the losses of a plain 2-process run."""

from __future__ import annotations

import time

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, N, read_metrics, small_run_overrides, train_losses
from tests.slurm_cluster import Cluster, ensure_installed

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)

SCRIPT = REPO / "util" / "slurm_multinode.sbatch"
CPU_NODES = ["--gpus-per-node=0", "--cpus-per-task=1"]  # the script asks for 8 GPUs per node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = ensure_installed()
    if why:
        pytest.skip(why)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def submit(cluster: Cluster, dump, overrides: list[str]) -> int:
    # One thread per process, as each of the reference run's two processes has: on one host the launcher
    # would give a lone process both cores, and a CPU matmul split over 2 threads can round differently.
    env = {"CONFIG_FILE": str(DEBUG_CONFIG), "NGPU": "1", "LOG_RANK": "0", "OMP_NUM_THREADS": "1"}
    return cluster.sbatch([*CPU_NODES, f"--output={dump}/slurm-%j.log", str(SCRIPT), *overrides], REPO, env)


def wait_for(cluster: Cluster, job: int, done, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        state = cluster.job_state(job)
        assert state not in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"), (what, state)
        assert time.monotonic() < deadline, f"timed out waiting for {what} (job {job} is {state})"
        time.sleep(0.5)


def test_sbatch_on_two_nodes_requeued_matches_a_plain_two_process_run(cluster, uninterrupted, tmp_path):
    """One job on 2 nodes x 1 process, requeued at step 1 or 2: the preemption checkpoint holds the step
    reached, the requeued job resumes from it, and every loss equals the plain 2-process run's."""
    job = submit(cluster, tmp_path, small_run_overrides(tmp_path, steps=2 * N, interval=N))

    def steps():
        try:
            return max((r["step"] for r in read_metrics(tmp_path) if "loss" in r), default=0)
        except (OSError, ValueError):
            return 0

    wait_for(cluster, job, lambda: steps() >= 1, "step 1")
    cluster.scontrol("requeue", str(job))
    wait_for(cluster, job, lambda: cluster.job_state(job) == "PENDING", "the requeue")
    cluster.scontrol("update", f"jobid={job}", "StartTime=now")  # SLURM holds a requeued job back 2 minutes
    wait_for(cluster, job, lambda: cluster.job_state(job) == "COMPLETED", "the requeued job to complete")
    log = (tmp_path / f"slurm-{job}.log").read_text()
    assert f"CONFIG_FILE={DEBUG_CONFIG}" in log and "rendezvous 127.0.0.1:" in log and "NGPU=1" in log
    assert "restart count 0" in log and "restart count 1" in log  # one log, appended to
    assert "launchers exited with 75" in log
    saved = [line for line in log.splitlines() if line.startswith("tinytitan: preempted: checkpoint")]
    step = int(saved[0].split(" holds step ")[1].split(";")[0])
    assert 1 <= step < 2 * N and f"Training starts at step {step + 1}" in log
    assert (tmp_path / "checkpoint" / f"step-{2 * N}" / ".metadata").exists()
    assert train_losses(tmp_path) == train_losses(uninterrupted)
