"""Every private torchtitan/torch name in tinytitan.compat, checked against the installed packages.

An upgrade that renames or changes one fails here, by name, instead of inside a training rank.
CheckpointManager's methods run on an instance made without __init__ (no process group, no disk).
"""

from __future__ import annotations

import inspect

import pytest
from torchtitan.components.checkpoint import AsyncMode, CheckpointManager

from tinytitan import compat
from tinytitan.errors import TinytitanError


def bare_checkpointer(**attrs) -> CheckpointManager:
    ckpt = object.__new__(CheckpointManager)
    for name, value in attrs.items():
        setattr(ckpt, name, value)
    return ckpt


def test_extra_train_specs_holds_the_registered_spec():
    import tinytitan.register  # noqa: F401

    assert compat.spec_registered("tinytitan")
    assert not compat.spec_registered("no-such-spec")


def test_create_checkpoint_id_names_the_step_folder():
    assert compat.checkpoint_folder(bare_checkpointer(folder="/runs/a/checkpoint"), 12) == "/runs/a/checkpoint/step-12"


def test_should_save_follows_the_interval_and_the_last_step():
    ckpt = bare_checkpointer(enable=True, load_only=False, enable_first_step_checkpoint=False, interval=10)
    assert [s for s in range(1, 31) if compat.checkpoint_due(ckpt, s, last_step=False)] == [10, 20, 30]
    assert compat.checkpoint_due(ckpt, 7, last_step=True)
    ckpt.enable = False
    assert not compat.checkpoint_due(ckpt, 10, last_step=True)


def test_async_wait_returns_with_nothing_in_flight_and_waits_for_a_future():
    from concurrent.futures import Future

    compat.wait_for_async_save(bare_checkpointer(async_mode=AsyncMode.DISABLED, enable_ft_dataloader_checkpoints=False,
                                                 save_future=None))  # fmt: skip
    done = Future()
    done.set_result(None)
    ckpt = bare_checkpointer(async_mode=AsyncMode.ASYNC, enable_ft_dataloader_checkpoints=False, save_future=done)
    compat.wait_for_async_save(ckpt)
    assert ckpt.save_future is None


def test_flattened_model_states_puts_model_tensors_at_the_top_level():
    class Model:
        def state_dict(self):
            return {"tok_embeddings.weight": 1, "output.weight": 2}

    ckpt = bare_checkpointer(states={"model": Model(), "optimizer": {"x": 3}, "train_state": {"step": 4}})
    assert compat.full_training_state(ckpt) == {
        "tok_embeddings.weight": 1,
        "output.weight": 2,
        "optimizer": {"x": 3},
        "train_state": {"step": 4},
    }


def test_set_pg_timeout_takes_a_timedelta_and_a_group():
    from torch.distributed import distributed_c10d

    assert list(inspect.signature(distributed_c10d._set_pg_timeout).parameters)[:2] == ["timeout", "group"]


def test_validator_init_builds_its_text_loader_through_the_replaced_name():
    """Validator.__init__ runs whole and keeps no C4 loader (which would download) while the context is open."""
    from torchtitan.components import validate
    from torchtitan.config import JobConfig

    original = validate.build_text_validation_dataloader
    args = dict(job_config=JobConfig(), dp_world_size=1, dp_rank=0, tokenizer=None, parallel_dims=None, loss_fn=None,
                validation_context=None, maybe_enable_amp=None, metrics_processor="metrics")  # fmt: skip
    with compat.validator_without_text_loader():
        validator = validate.Validator(**args)
    assert validator.validation_dataloader is None and validator.metrics_processor == "metrics"
    assert validate.build_text_validation_dataloader is original
    assert "build_text_validation_dataloader" in inspect.getsource(validate.Validator.__init__)


def test_a_missing_private_name_is_one_line_naming_it():
    with pytest.raises(TinytitanError, match=r"no CheckpointManager\._should_save.*torchtitan==0\.2\.2"):
        compat.checkpoint_due(object.__new__(type("CheckpointManager", (), {})), 1, last_step=False)


def test_rope_table_is_torchtitans_buffer_for_the_args_sequence_length():
    import torch

    from tinytitan.models import build_torchtitan, flavor_args

    args = flavor_args("debug")
    with torch.device("meta"):
        from torchtitan.models.llama3 import Transformer

        shapes = {k: v.shape for k, v in Transformer(args).state_dict().items()}
    state = {k: torch.zeros(shape) for k, shape in shapes.items()}
    model = build_torchtitan(args, state, seq_len=64)
    assert model.freqs_cis.shape == (64, args.dim // args.n_heads // 2) and model.freqs_cis.device.type == "cpu"
    assert torch.equal(model.freqs_cis, compat.rope_table(model)) and not model.training


def test_the_chunked_loss_forward_repeats_torchtitans_forward_as_pinned():
    """``tinytitan.rank.loss.TinyTransformer.forward`` repeats the body of torchtitan's ``Transformer.forward``
    (embeddings, every layer with the RoPE table, norm, output) to pass the labels to the output. When
    torchtitan's forward changes, this fails: read the new one, update TinyTransformer.forward, then the hash."""
    import hashlib

    from torchtitan.models.llama3 import Transformer

    digest = hashlib.sha256(inspect.getsource(Transformer.forward).encode()).hexdigest()[:16]
    assert digest == "a15303758b1654b1", "torchtitan's Transformer.forward changed: update TinyTransformer.forward"


def test_no_private_torchtitan_name_outside_compat():
    """A private torchtitan name (``_x``, defined by torchtitan) used by a tinytitan module other than compat.py:
    an attribute read or write on anything but our own ``self``, or an import."""
    import ast
    from pathlib import Path

    import torchtitan

    from tests.helpers import REPO

    private = set()
    for path in Path(torchtitan.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                private.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                private.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                private.add(node.id)
    private = {n for n in private if n.startswith("_") and not n.startswith("__")}
    assert "_create_checkpoint_id" in private  # the scan sees what compat reaches
    found = []
    for path in (REPO / "tinytitan").rglob("*.py"):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchtitan"):
                found += [
                    f"{path.relative_to(REPO)}:{node.lineno} import {a.name}" for a in node.names if a.name in private
                ]
    assert not found, "private torchtitan names outside tinytitan/compat.py: " + "; ".join(found)


def test_prefer_sdpa_backend_reorders_each_sdpa_modules_kernel_priority():
    """[model] sdpa_backend: the chosen kernel first, torchtitan's others after it; the model still runs."""
    import torch
    from torch.nn.attention import SDPBackend
    from torchtitan.models.llama3 import Transformer

    from tinytitan.models import flavor_args

    torch.manual_seed(0)
    model = Transformer(flavor_args("debug"))
    with torch.no_grad():
        model.init_weights()
    tokens = torch.randint(0, 4096, (1, 16))
    with torch.no_grad():
        before = model(tokens)
    assert compat.prefer_sdpa_backend(model, "flash") == 4  # one per layer
    lists = [m.sdpa_backends for m in model.modules() if hasattr(m, "sdpa_backends")]
    assert lists and all(b == [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH] for b in lists)
    compat.prefer_sdpa_backend(model, "math")
    assert all(m.sdpa_backends[0] == SDPBackend.MATH for m in model.modules() if hasattr(m, "sdpa_backends"))
    with torch.no_grad():
        assert torch.allclose(model(tokens), before, atol=1e-5)


def test_flex_attention_compiled_by_swaps_torchtitans_compiled_functions_and_restores_them():
    from torchtitan.models import attention

    wrapper = attention.FlexAttentionWrapper
    before = wrapper._compiled_flex_attn, attention._compiled_create_block_mask
    with compat.flex_attention_compiled_by("eager"):
        inside = wrapper._compiled_flex_attn, attention._compiled_create_block_mask
        assert inside[0] is not before[0] and inside[1] is not before[1]
    assert (wrapper._compiled_flex_attn, attention._compiled_create_block_mask) == before


def test_foreach_lerp_moves_each_tensor_toward_its_end_in_place():
    import torch

    a, b = torch.zeros(3), torch.ones(2)
    compat.foreach_lerp_([a, b], [torch.full((3,), 4.0), torch.full((2,), 3.0)], 0.25)
    assert a.tolist() == [1.0, 1.0, 1.0] and b.tolist() == [1.5, 1.5]


def test_lm_eval_git_lookup_is_quiet_outside_a_checkout_and_restored(tmp_path, monkeypatch, capfd):
    from lm_eval import evaluator

    original = evaluator.get_git_commit_hash
    monkeypatch.chdir(tmp_path)  # no git checkout here: `git describe` fails
    with compat.lm_eval_quiet_git():
        assert evaluator.get_git_commit_hash is not original
        assert evaluator.get_git_commit_hash() is None
    assert "fatal" not in capfd.readouterr().err
    assert evaluator.get_git_commit_hash is original


def test_train_step_clips_through_dist_utils_and_the_listener_gets_the_norm():
    """The guard's hook: torchtitan's train step calls ``dist_utils.clip_grad_norm_`` by attribute, so the
    wrapped function is the one it runs, and the wrapper returns and hands over the same total norm."""
    import torch
    from torchtitan.distributed import utils as dist_utils
    from torchtitan.train import Trainer

    assert "dist_utils.clip_grad_norm_(" in inspect.getsource(Trainer.train_step)
    seen = []
    compat.on_grad_norm(seen.append)
    compat.on_grad_norm(seen.append)  # installed once: a second trainer replaces the listener, no double wrap
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 3.0)
    norm = dist_utils.clip_grad_norm_([p], max_norm=1.0, foreach=True)
    assert len(seen) == 1 and seen[0] is norm and float(norm) == 6.0
    assert torch.allclose(p.grad.norm(), torch.tensor(1.0), atol=1e-4)
