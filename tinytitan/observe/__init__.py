"""Seeing a run: curves, held-out evaluation, sampling (measuring throughput is ``tinytitan.bench``).

- ``events`` / ``plot``: TensorBoard scalars of a run, drawn as PNG.
- ``loading`` (+ ``model_args``, the flags naming a model): a checkpoint (or an HF export) in one process,
  what was trained read from the run's record;
- ``evaluate``: the ``eval loss`` / ``eval tasks`` command over ``loss_eval`` (held-out loss),
  ``task_eval`` / ``harness`` / ``titan_lm`` (lm-eval) and ``curve`` (every checkpoint of a run);
- ``generate``: sampling.
"""
