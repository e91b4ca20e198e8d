"""A real two-node SLURM cluster on this host, for the sbatch tests: munge, slurmctld and two
``slurmd -N`` on 127.0.0.1 with their own ports. Debian's slurm-wlm and munge are installed
with apt-get when missing (CI runs as root with the Debian registry)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tinytitan.run.faults import die_with_parent

NODES = ("nodeA", "nodeB")


def ensure_installed() -> str | None:
    """None when slurmctld, slurmd and munged exist (installing them if we can), else why not."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get as root is not available to install slurm-wlm and munge"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:]}"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        ctld, port_a, port_b = _free_ports(3)
        for sub in ("state", "spool-nodeA", "spool-nodeB", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join([
                "ClusterName=tinytitan", "SlurmctldHost=localhost", f"SlurmctldPort={ctld}",
                "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
                f"AuthInfo=socket={self.root}/munge/munge.socket",
                f"StateSaveLocation={self.root}/state", f"SlurmdSpoolDir={self.root}/spool-%n",
                f"SlurmctldPidFile={self.root}/slurmctld.pid", f"SlurmdPidFile={self.root}/slurmd-%n.pid",
                f"SlurmctldLogFile={self.root}/slurmctld.log", f"SlurmdLogFile={self.root}/slurmd-%n.log",
                "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
                "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "ReturnToService=2", "MpiDefault=none",
                "KillWait=60", "SchedulerType=sched/builtin", "JobRequeue=1",
                f"NodeName=nodeA NodeAddr=127.0.0.1 Port={port_a} CPUs=1 State=UNKNOWN",
                f"NodeName=nodeB NodeAddr=127.0.0.1 Port={port_b} CPUs=1 State=UNKNOWN",
                "PartitionName=ci Nodes=nodeA,nodeB Default=YES MaxTime=INFINITE State=UP",
            ]) + "\n"
        )  # fmt: skip
        socket_path = self.root / "munge" / "munge.socket"
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True)
        self._daemon(["munged", "--foreground", "--force", f"--socket={socket_path}",
                      f"--pid-file={self.root}/munge/munged.pid", f"--seed-file={self.root}/munge/seed",
                      f"--log-file={self.root}/munge/munged.log"])  # fmt: skip
        _wait(lambda: socket_path.exists(), "munged")
        self._daemon(["slurmctld", "-D", "-i"])
        for node in NODES:
            self._daemon(["slurmd", "-D", "-N", node])
        _wait(lambda: self.idle_nodes() == len(NODES), "two idle SLURM nodes", timeout=60)

    def _daemon(self, cmd: list[str]) -> None:
        log = open(self.root / f"{Path(cmd[0]).name}-{len(self.procs)}.out", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           preexec_fn=lambda: die_with_parent(signal.SIGTERM)))  # fmt: skip

    def idle_nodes(self) -> int:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True, text=True)
        return sum(1 for line in out.stdout.splitlines() if line.split()[-1:] == ["idle"])

    def sbatch(self, args: list[str], cwd: Path, env: dict) -> int:
        out = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env={**self.env, **env},
                             capture_output=True, text=True, check=True)  # fmt: skip
        return int(out.stdout.strip().split(";")[0])

    def scontrol(self, *args: str) -> str:
        return subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True).stdout

    def job_state(self, job: int) -> str:
        out = self.scontrol("show", "job", str(job))
        for part in out.split():
            if part.startswith("JobState="):
                return part.split("=", 1)[1]
        return "UNKNOWN"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(done, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
