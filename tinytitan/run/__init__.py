"""A run folder (``--job.dump_folder``) and what the processes of a run keep in it or tell each other:

- ``folder``: ``RunFolder``, the layout written once (every path of a run folder);
- ``record``: ``run.toml``, the config as the ranks ran it and one segment per launch; what a run trained;
- ``faults``: the launcher <-> rank notes (typed files), heartbeats, exit codes.
"""
