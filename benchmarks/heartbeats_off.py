"""For benchmarks/heartbeat_cost.py: a run whose ranks record and write no heartbeat.

Loaded with ``--experimental.custom_import benchmarks.heartbeats_off``. torchtitan imports it inside
Trainer.__init__, after TinyTrainer made its HeartbeatWriter (one file write at start, not in a step),
so the writer's methods become no-ops from then on: no in-memory update per phase, no file write.
"""

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)
from tinytitan.rank.heartbeat import HeartbeatWriter


def _nothing(*_args, **_kwargs) -> None:
    return None


HeartbeatWriter.begin_step = _nothing
HeartbeatWriter.enter = _nothing
HeartbeatWriter.flush = _nothing
