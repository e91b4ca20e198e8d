"""What only a GPU can show: bf16 FSDP with torch.compile through the same launcher."""

import pytest
import torch

from tests.helpers import launch, small_run_overrides, train_losses


@pytest.mark.gpu
@pytest.mark.parametrize("loss", ["plain", "chunked"])
def test_debug_model_trains_in_bf16_with_compile_on_one_gpu(tmp_path, loss):
    overrides = small_run_overrides(tmp_path, steps=30, interval=30)
    overrides += [
        "--training.mixed_precision_param",
        "bfloat16",
        "--compile.enable",
        "--optimizer.implementation",
        "fused",
        "--loss.kind",
        loss,
        "--loss.chunk_tokens",
        "300",  # 4 x 256 tokens: 4 chunks, the last one shorter (two compiled shapes)
    ]
    proc = launch(overrides, nproc=1)
    assert "CPU mode" not in proc.stdout + proc.stderr
    losses = train_losses(tmp_path)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses[30] < losses[1] - 1.0
