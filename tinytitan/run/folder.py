"""The layout of a run folder, written once: every path tinytitan reads or writes in ``--job.dump_folder``.

```
<dump_folder>/
  run.toml                 the run's record: the config as the ranks ran it, one segment per launch
  metrics.jsonl            one JSON row per logged step (rank 0)
  steps.jsonl              what a step did besides training: skipped, rolled back (one row per event)
  tb/<time>/               TensorBoard event files, one folder per start ([metrics] save_tb_folder)
  checkpoint/step-N/       DCP checkpoints ([checkpoint] folder)
  checkpoint/step-N/health.json  whether the steps up to N were healthy (written after the save)
  .tinytitan/lock          the launcher's flock: one training per folder
  .tinytitan/heartbeats/rank-R.json  where each rank is in its step
  .tinytitan/data-files.json  the data files (size, mtime) of the last accepted launch: a resume names a changed one
  .tinytitan/holds/step-N  a reader's shared flock on checkpoint step-N: the purge leaves it alone
```

A ``RunFolder`` is built from the job config (``RunFolder.of(job_config)``) or from a path, and is
frozen: functions that need a run's paths take it rather than the whole job config. Nothing here
imports the rest of tinytitan.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

RUN_FILE = "run.toml"
METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.jsonl"
STATE_DIR = ".tinytitan"
HEALTH_FILE = "health.json"
STEP_DIR = re.compile(r"^step-(\d+)$")


def step_name(step: int) -> str:
    """The name of a checkpoint folder, as torchtitan writes it (``step-N``)."""
    return f"step-{step}"


def step_of(path: str | os.PathLike) -> int | None:
    """N for a folder named ``step-N``, else None."""
    match = STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def health_file(step_folder: str | os.PathLike) -> Path:
    """The health mark of a checkpoint folder (``step-N/health.json``), wherever the folder is."""
    return Path(step_folder) / HEALTH_FILE


@dataclass(frozen=True)
class RunFolder:
    root: Path
    checkpoint_dir: str = "checkpoint"  # [checkpoint] folder
    tb_dir: str = "tb"  # [metrics] save_tb_folder

    @classmethod
    def of(cls, job_config) -> RunFolder:
        """The run folder a job config trains into (``job.dump_folder``, ``checkpoint.folder``, ``metrics.save_tb_folder``)."""
        return cls(
            Path(job_config.job.dump_folder),
            checkpoint_dir=job_config.checkpoint.folder,
            tb_dir=job_config.metrics.save_tb_folder,
        )

    @classmethod
    def at(cls, root: str | os.PathLike) -> RunFolder:
        """A run folder with the default layout (what readers assume when they have no config)."""
        return cls(Path(root))

    # ---------------------------------------------------------------- the run's files
    @property
    def record(self) -> Path:
        return self.root / RUN_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def steps(self) -> Path:
        return self.root / STEPS_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / self.tb_dir

    # ---------------------------------------------------------------- checkpoints
    @property
    def checkpoints(self) -> Path:
        return self.root / self.checkpoint_dir

    def step(self, n: int) -> Path:
        return self.checkpoints / step_name(n)

    def health(self, n: int) -> Path:
        return health_file(self.step(n))

    # ---------------------------------------------------------------- run-internal state
    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def heartbeats(self) -> Path:
        return self.state / "heartbeats"

    def heartbeat(self, rank: int) -> Path:
        return self.heartbeats / f"rank-{rank}.json"

    @property
    def data_files(self) -> Path:
        return self.state / "data-files.json"

    @property
    def record_digest(self) -> Path:
        """The sha256 of the record as the launcher last wrote it (an edit of ``run.toml`` since is said)."""
        return self.state / "record.sha256"

    @property
    def holds(self) -> Path:
        return self.state / "holds"

    def hold(self, n: int) -> Path:
        """The file whose shared ``flock`` keeps checkpoint ``step(n)`` from the purge (tinytitan.run.hold)."""
        return self.holds / step_name(n)

    @classmethod
    def of_step(cls, step_folder: str | os.PathLike) -> tuple[RunFolder, int] | None:
        """The run folder a ``<run>/<checkpoint folder>/step-N`` folder belongs to, and N; None for another path."""
        path = Path(step_folder)
        n = step_of(path)
        if n is None:
            return None
        return cls(path.parent.parent, checkpoint_dir=path.parent.name), n
