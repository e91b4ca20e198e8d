"""Seeing a run and measuring it: throughput benchmark, curves, held-out evaluation, sampling.

- ``bench`` / ``sweep`` / ``synthetic`` / ``profile``: real torchtitan training on synthetic tokens, timed,
  and where a step's time goes.
- ``events`` / ``plot``: TensorBoard scalars of a run, drawn as PNG.
- ``loading`` / ``evaluate`` / ``generate``: a checkpoint (or an HF export) in one CPU process.
"""
