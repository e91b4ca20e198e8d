"""The CPU layer, checked in a fresh interpreter (it patches torchtitan's module globals)."""

import subprocess
import sys
import textwrap

import torch


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_activate_points_every_torchtitan_module_at_the_cpu():
    out = run_python(
        """
        from tinytitan.rank import device
        assert device.activate() is True and device.cpu_mode()
        import sys, torch, torchtitan.train, torchtitan.components.validate
        bad = [name for name, m in sys.modules.items() if name.startswith("torchtitan")
               and (getattr(m, "device_type", None) == "cuda" or getattr(m, "device_module", None) is torch.cuda)]
        assert not bad, bad
        from torchtitan.tools import utils
        stats = utils.device_module.memory_stats()
        assert stats["reserved_bytes.all.peak"] > 10 * 2**20
        assert utils.device_module.get_device_properties().total_memory > 2**30
        utils.device_module.set_device(torch.device("cpu:1"))
        print(utils.device_type)
        """
    )
    assert out.strip() == "cpu"


def test_adapt_job_config_forces_fp32_and_no_compile_on_cpu():
    out = run_python(
        """
        from tinytitan.rank import device
        device.activate()
        from torchtitan.config import JobConfig
        cfg = JobConfig()
        cfg.training.mixed_precision_param = "bfloat16"
        cfg.compile.enable = True
        cfg.profiling.enable_profiling = True
        device.adapt_job_config(cfg)
        print(cfg.training.mixed_precision_param, cfg.compile.enable, cfg.optimizer.implementation,
              cfg.profiling.enable_profiling)
        """
    )
    assert out.split() == ["float32", "False", "foreach", "False"]


def test_inactive_without_activate():

    if not torch.accelerator.is_available():
        out = run_python(
            "from tinytitan.rank import device; import torchtitan.tools.utils as u; print(device.cpu_mode(), u.device_type)"
        )
        assert out.split() == ["False", "cuda"]  # torchtitan's own fallback, which activate() exists to fix
