"""Measuring training: real torchtitan runs on synthetic tokens, timed (``tinytitan bench``).

- ``run``: one measured run (settings, command, JSON row); ``sweep``: the search under a time budget;
- ``synthetic``: the TrainSpec whose loader serves random tokens; ``profile``: where a step's time goes;
- ``cli``: the command. It sits above the launcher, which it drives.
"""
