"""torchtitan's ``--experimental.custom_import`` hook, named in every config: registers tinytitan's TrainSpec.

The spec itself is ``tinytitan.rank.spec``; this module's name is the stable one that TOML files use.
"""

from tinytitan.rank.spec import register

register()
