"""tinytitan as a user gets it from a wheel: built, installed into a clean virtual environment,
and training the embedded default from an empty folder, with no checkout in sight.

Offline and quick: the wheel is built without build isolation, and the new environment
installs only the tinytitan wheel (``--no-deps``). Its dependencies (torch, torchtitan, ...)
come from this test's own environment through a ``.pth`` line; a path listed in a ``.pth``
file is only added to ``sys.path`` (the ``.pth`` files inside it are not run), so the editable
install of the checkout that may live there stays out: ``tinytitan`` can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import REPO, read_metrics

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "tinytitan")
SHIPPED = ("debug", "micro", "nano", "tiny")


def package_files() -> set[str]:
    """Every file of the package in the checkout, as the wheel names it."""
    root = REPO / "tinytitan"
    return {
        str(p.relative_to(REPO))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def build_wheel(out: Path) -> Path:
    """`pip wheel` of a copy of the sources (the build writes build/ and *.egg-info/ where it builds)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--wheel-dir", str(out / "dist"), str(src)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = (out / "dist").glob("tinytitan-*.whl")
    return wheel


def make_venv(where: Path, wheel: Path) -> Path:
    """A virtual environment holding only the wheel; this environment's packages reachable through a .pth."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # After the install, so that pip saw an empty environment (not this one's editable tinytitan).
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (Path(site) / "tinytitan-test-deps.pth").write_text("\n".join(ours) + "\n")
    return python


def user_env(python: Path) -> dict[str, str]:
    """The environment of a user of the installed package: nothing points at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST", "CONFIG_FILE", "VIRTUAL_ENV"))}
    return {**env, "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}", "NGPU": "2"}


def test_the_wheel_ships_the_configs_and_assets_and_trains_from_an_empty_folder(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"tinytitan/train_configs/llama3_{n}.toml" for n in SHIPPED} <= names
    assert "tinytitan/assets/tokenizer/tokenizer.json" in names
    missing = package_files() - names
    assert not missing, f"files of the package the wheel leaves out: {sorted(missing)}"

    python = make_venv(tmp_path / "venv", wheel)
    site = python.parent.parent / "lib"
    empty = tmp_path / "empty"
    empty.mkdir()
    env = user_env(python)
    where = (
        "import json, tinytitan; from tinytitan.config import find_config; from tinytitan.bench import run; "
        "print(json.dumps({'package': tinytitan.__file__, 'tiny': str(find_config('tiny')), "
        "'debug': str(find_config('train_configs/llama3_debug.toml')), 'bench': str(run.base_config('nano'))}))"
    )
    proc = subprocess.run([str(python), "-c", where], cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    print(f"tinytitan imported from {found['package']}")
    for key in ("package", "tiny", "debug", "bench"):  # the installed package's files, never the checkout's
        assert Path(found[key]).is_relative_to(site) and not Path(found[key]).is_relative_to(REPO), found
    assert found["tiny"].endswith("tinytitan/train_configs/llama3_tiny.toml")

    # The console script, the embedded default config, tokenizer and sample: 2 steps on 2 CPU processes.
    command = [str(python.parent / "tinytitan"), "train", "--training.steps", "2", "--metrics.log_freq", "1"]
    proc = subprocess.run(command, cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert f"tinytitan: training {site}" in proc.stdout and "train_configs/llama3_debug.toml" in proc.stdout
    assert "does not exist" not in output  # torchtitan's warning about the embedded tokenizer's relative path
    run = empty / "outputs" / "debug"
    assert (run / "checkpoint" / "step-2" / ".metadata").is_file()
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2]
