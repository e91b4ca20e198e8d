"""Seeing a run: curves, held-out evaluation, sampling (measuring throughput is ``tinytitan.bench``).

- ``events`` / ``plot``: TensorBoard scalars of a run, drawn as PNG.
- ``loading`` / ``evaluate`` / ``generate``: a checkpoint (or an HF export) in one CPU process.
"""
