"""Fault injection for the fault tests: every rank raises the same ``TinytitanError`` at step 2, as a
check that only the ranks can make would (one that the launcher cannot make before torchrun starts).

Loaded into the training processes with ``--experimental.custom_import tests.raise_in_ranks``.
"""

import tinytitan.register  # noqa: F401  (the TrainSpec this run still needs)
from tinytitan.errors import TinytitanError
from tinytitan.rank.trainer import TinyTrainer

_train_step = TinyTrainer.train_step


def _raise_at_step_2(self, data_iterator):
    if self.step == 2:
        raise TinytitanError("injected at step 2 by tests.raise_in_ranks: remove the custom_import")
    return _train_step(self, data_iterator)


TinyTrainer.train_step = _raise_at_step_2
