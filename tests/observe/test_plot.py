"""Seeing a run: its TensorBoard scalars, and ``tinytitan plot`` drawing them from the real event files."""

from __future__ import annotations

import numpy as np
import pytest

from tinytitan.cli import main
from tinytitan.observe.events import read_scalars

SCALARS = (
    "loss_metrics/global_avg_loss",
    "lr",
    "grad_norm",
    "throughput(tps)",
    "memory/max_reserved(GiB)",
    "time/elapsed_s",
    "time/eta_s",
    "validation_metrics/loss",
)


def png_pixels(path):
    from matplotlib import image

    return image.imread(str(path))


def test_run_logs_the_scalars_a_user_watches(debug_run):
    scalars = read_scalars(debug_run)
    for tag in SCALARS:
        assert tag in scalars, f"{tag} missing; have {sorted(scalars)}"
    assert [s for s, _ in scalars["loss_metrics/global_avg_loss"]] == list(range(1, 21))
    assert {10, 20} <= {s for s, _ in scalars["validation_metrics/loss"]}
    sources = {t.removeprefix("data/tokens/") for t in scalars if t.startswith("data/tokens/")}
    assert sources == {"slimpajama", "starcoderdata"}
    for source in sources:  # held-out loss per source
        assert {10, 20} <= {s for s, _ in scalars[f"validation/{source}/loss"]}
    assert scalars["time/eta_s"][-1][1] == pytest.approx(0, abs=1.0)  # the last step has nothing left to do
    assert max(v for _, v in scalars["lr"]) == pytest.approx(3e-3)
    import torch

    assert ("mfu(%)" in scalars) == torch.cuda.is_available()  # on CPU MFU is n/a (no peak FLOPS), not zeros


def test_plot_writes_a_png_of_the_requested_size(debug_run, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(debug_run), "--out", str(out), "--size", "900x700"]) == 0
    pixels = png_pixels(out)
    assert pixels.shape[:2] == (700, 900)
    assert pixels[..., :3].std() > 0.05  # lines and text, not a blank canvas
    assert "wrote" in capsys.readouterr().out


def write_other_run(debug_run, folder):
    """A second run's event file: the debug run's curves, shifted, as another setting would give."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder / "tb" / "20250101-0000"))
    for tag, points in read_scalars(debug_run).items():
        for step, value in points:
            writer.add_scalar(tag, value * 1.5 if tag != "n_tokens_seen" else value, step)
    writer.close()
    return folder


def test_plot_overlays_runs_against_tokens(debug_run, tmp_path):
    other = write_other_run(debug_run, tmp_path / "other_run")
    out = tmp_path / "overlay.png"
    assert main(["plot", str(debug_run), str(other), "--out", str(out), "--x", "tokens", "--smooth", "0.6"]) == 0
    pixels = png_pixels(out)
    assert pixels.shape[:2] == (900, 1200)
    # two runs: the default colour cycle's first two colours (blue, orange) are both drawn
    rgb = (pixels[..., :3] * 255).astype(int).reshape(-1, 3)
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(rgb - colour).sum(axis=1) < 30).sum() > 1000, colour


def test_plot_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_never_overwrites_without_force(debug_run, tmp_path, capsys):
    out = tmp_path / "mine.png"
    out.write_bytes(b"a picture I made")
    assert main(["plot", str(debug_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists: pass --force" in err and err.count("\n") == 1 and out.read_bytes() == b"a picture I made"
    assert main(["plot", str(debug_run), "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is not a .png file" in capsys.readouterr().err and not (tmp_path / "notes.txt").exists()
    assert main(["plot", str(debug_run), "--out", str(out), "--force"]) == 0
    assert png_pixels(out).shape[:2] == (900, 1200)
