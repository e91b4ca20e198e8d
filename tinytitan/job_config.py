"""tinytitan's sections of the TOML job config, merged into torchtitan's JobConfig.

Loaded by torchtitan through ``[job] custom_config_module = "tinytitan.job_config"``.
"""

from dataclasses import dataclass, field

from tinytitan.data.config import Data


@dataclass
class JobConfig:
    data: Data = field(default_factory=Data)
