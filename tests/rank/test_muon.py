"""Muon (``[optimizer] name = "Muon"``, tinytitan/rank/muon.py): its groups, its refusals, its math under
FSDP against one process, exact resume after SIGKILL, resume on another process count, and export."""

from __future__ import annotations

import os
import socket
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import REPO, N, launch, small_run_overrides, train_losses
from tinytitan.errors import TinytitanError, run_guarded
from tinytitan.models import DEFAULT_MUON_PARAMS, check_flavor_groups
from tinytitan.rank.muon import MuonAdamW, param_groups

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)

MUON_CONFIG = REPO / "train_configs" / "llama3_debug_muon.toml"
HIDDEN = ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2",
          "feed_forward.w3")  # fmt: skip


@pytest.mark.parametrize("flavor, layers", [("debug", 4), ("nano", 12)])
def test_every_hidden_matrix_is_under_muon_and_the_rest_under_adamw(flavor, layers):
    groups = check_flavor_groups(flavor, list(DEFAULT_MUON_PARAMS))
    muon = {name for name, group in groups.items() if group == "muon"}
    assert muon == {f"layers.{i}.{m}.weight" for i in range(layers) for m in HIDDEN}
    assert groups["tok_embeddings.weight"] == "embed" and groups["output.weight"] == "output"
    norms = {f"layers.{i}.{n}.weight" for i in range(layers) for n in ("attention_norm", "ffn_norm")} | {"norm.weight"}
    assert {name for name, group in groups.items() if group == "adamw"} == norms
    assert Counter(groups.values()) == {"muon": 7 * layers, "adamw": 2 * layers + 1, "embed": 1, "output": 1}


def test_each_group_gets_its_own_lr():
    from tinytitan.models import flavor_args
    from tinytitan.rank.loss import TinyTransformer

    with torch.device("meta"):
        model = TinyTransformer(flavor_args("debug"))
    cfg = SimpleNamespace(lr=0.02, adamw_lr=3e-3, embed_lr=0.1, output_lr=0, muon_params=list(DEFAULT_MUON_PARAMS))
    lrs = [(g["muon"], g["lr"], len(g["params"])) for g in param_groups(model, cfg)]
    assert lrs == [(True, 0.02, 28), (False, 0.1, 1), (False, 3e-3, 1), (False, 3e-3, 9)]


BAD = [
    (["--optimizer.momentum", "-0.5"], "[optimizer] momentum = -0.5: Muon's momentum must be in [0, 1), e.g. 0.95"),
    (["--optimizer.ns_steps", "0"], "[optimizer] ns_steps = 0: Muon needs at least 1 Newton-Schulz step (5 is the usual)"),
    (["--optimizer.muon_params", "layers.*"], "[optimizer] muon_params pattern 'layers.*' matches "
     "layers.0.attention_norm.weight (1-D), which Muon cannot take: Muon orthogonalizes 2-D hidden matrices only; "
     "narrow the pattern (default: ['layers.*.attention.w*', 'layers.*.feed_forward.w*'])"),
    (["--optimizer.muon_params", "tok_embeddings.*"], "[optimizer] muon_params pattern 'tok_embeddings.*' matches "
     "tok_embeddings.weight (the embedding), which Muon cannot take: Muon orthogonalizes 2-D hidden matrices only; "
     "narrow the pattern (default: ['layers.*.attention.w*', 'layers.*.feed_forward.w*'])"),
]  # fmt: skip


@pytest.mark.parametrize("overrides, expected", BAD, ids=[b[0][0] for b in BAD])
def test_bad_muon_settings_are_one_line_before_any_process(tmp_path, capsys, overrides, expected):
    from tinytitan.launcher import launch as launcher

    env = {**os.environ, "NGPU": "2", "LOG_RANK": "0"}
    code = run_guarded(lambda: launcher.launch(str(MUON_CONFIG), ["--job.dump_folder", str(tmp_path / "run"),
                                                                  *overrides], env))  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [f"tinytitan: error: {expected}"]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the math: 2 FSDP ranks = 1 process

STEPS, BATCH, SEQ = 3, 4, 32


def _batches(vocab: int) -> list[torch.Tensor]:
    """The same random batch every step: its loss must fall."""
    return [torch.randint(0, vocab, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))] * STEPS


def _train(model, optimizer, rows: slice) -> list[float]:
    losses = []
    for batch in _batches(model.vocab_size):
        tokens, labels = batch[rows, :-1], batch[rows, 1:]
        loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), labels.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        mean = loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        losses.append(mean.item())
    return losses


def _model_and_optimizer():
    from tinytitan.models import flavor_args
    from tinytitan.rank.loss import TinyTransformer

    torch.manual_seed(0)
    model = TinyTransformer(flavor_args("debug"))
    with torch.no_grad():
        model.init_weights()
    model.vocab_size = flavor_args("debug").vocab_size
    cfg = SimpleNamespace(lr=0.02, adamw_lr=3e-3, embed_lr=0, output_lr=0, muon_params=list(DEFAULT_MUON_PARAMS))
    return model, lambda: MuonAdamW(param_groups(model, cfg), momentum=0.95, nesterov=True, ns_steps=5,
                                    betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)  # fmt: skip


def _fsdp_rank(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, optimizer = _model_and_optimizer()
        for block in model.layers.values():
            fully_shard(block)
        fully_shard(model)
        per_rank = BATCH // world
        losses = _train(model, optimizer(), slice(rank * per_rank, (rank + 1) * per_rank))
        weights = {name: p.full_tensor() for name, p in model.named_parameters()}
        if rank == 0:
            torch.save({"losses": losses, "weights": weights}, out)
    finally:
        dist.destroy_process_group()


def test_muon_under_fsdp_on_2_ranks_trains_as_one_process(tmp_path):
    """2 gloo ranks, each holding row shards of every matrix and half of each batch, against one process
    holding whole matrices and the whole batch: the same losses and weights within float tolerance."""
    torch.set_num_threads(1)
    model, optimizer = _model_and_optimizer()
    single = _train(model, optimizer(), slice(None))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_fsdp_rank, args=(2, port, str(tmp_path / "fsdp.pt")), nprocs=2)
    fsdp = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    assert single[-1] < single[0] - 0.1, single
    assert fsdp["losses"] == pytest.approx(single, abs=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fsdp["weights"][name], p.detach(), atol=2e-5, rtol=1e-4, msg=name)


UNEVEN = [(5, 4), (7, 3), (2, 5), (6, 6)]  # rows over 3 ranks: 2+2+1, 3+3+1, 1+1+0 (an empty shard), 2+2+2


def _split_rank(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from tinytitan.rank.muon import orthogonalize_all

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        torch.manual_seed(0)
        wholes = [torch.randn(shape) for shape in UNEVEN]
        shards = [distribute_tensor(w, mesh, [Shard(0)]) for w in wholes]
        results = orthogonalize_all(shards, steps=5)
        assert all(r.placements == s.placements and r.to_local().shape == s.to_local().shape
                   for r, s in zip(results, shards, strict=True))  # fmt: skip
        gathered = [r.full_tensor() for r in results]
        if rank == 0:
            torch.save({"wholes": wholes, "results": gathered}, out)
    finally:
        dist.destroy_process_group()


def test_split_orthogonalization_equals_whole_matrices_with_uneven_and_empty_shards(tmp_path):
    """Each matrix orthogonalized by one owner rank (gather, Newton-Schulz, scatter) over 3 gloo ranks, with
    row counts that do not divide by 3 and a rank holding no row: every rank's rows equal those of the whole
    matrix's Newton-Schulz in one process, and each result keeps its shard's layout."""
    from tinytitan.rank.muon import newton_schulz

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_split_rank, args=(3, port, str(tmp_path / "split.pt")), nprocs=3)
    saved = torch.load(tmp_path / "split.pt", weights_only=True)
    for whole, result in zip(saved["wholes"], saved["results"], strict=True):
        torch.testing.assert_close(result, newton_schulz(whole, 5), atol=1e-6, rtol=1e-5)
        assert result.abs().sum() > 0


# ---------------------------------------------------------------- through the launcher: resume, reshard, export


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory):
    """2N Muon steps on 2 processes, a checkpoint every N."""
    dump = tmp_path_factory.mktemp("muon") / "run"
    launch(small_run_overrides(dump, 2 * N, N), config=MUON_CONFIG)
    return dump


def test_muon_state_is_in_the_checkpoint_and_resumes_exactly_after_sigkill(muon_run, tmp_path):
    from torch.distributed.checkpoint import FileSystemReader

    from tests.launcher.test_faults import start, wait_until

    keys = set(FileSystemReader(str(muon_run / "checkpoint" / f"step-{N}")).read_metadata().state_dict_metadata)
    assert "optimizer.state.layers.0.attention.wq.weight.momentum_buffer" in keys
    assert "optimizer.state.tok_embeddings.weight.exp_avg_sq" in keys

    overrides = small_run_overrides(tmp_path, 2 * N, N)
    proc = start(overrides, tmp_path / "log.txt", {"CONFIG_FILE": str(MUON_CONFIG)})
    wait_until(proc, lambda: (tmp_path / "checkpoint" / f"step-{N}" / ".metadata").exists(), "the checkpoint")
    proc.kill()
    proc.wait()
    rerun = launch(overrides, config=MUON_CONFIG)
    assert f"Training starts at step {N + 1}" in rerun.stdout + rerun.stderr
    expected, resumed = train_losses(muon_run), train_losses(tmp_path)
    assert [resumed[s] for s in range(N + 1, 2 * N + 1)] == [expected[s] for s in range(N + 1, 2 * N + 1)]


def test_a_muon_checkpoint_of_2_processes_resumes_on_1_with_the_chunked_loss(muon_run, tmp_path):
    """The optimizer state reshards (2 -> 1 process); the chunked loss keeps output.weight in its group."""
    import shutil

    shutil.copytree(muon_run / "checkpoint" / f"step-{N}", tmp_path / "checkpoint" / f"step-{N}")
    overrides = [*small_run_overrides(tmp_path, 2 * N, N), "--loss.kind", "chunked", "--loss.chunk_tokens", "256"]
    proc = launch(overrides, config=MUON_CONFIG, nproc=1)
    assert f"Training starts at step {N + 1}" in proc.stdout + proc.stderr
    expected, resumed = train_losses(muon_run), train_losses(tmp_path)
    assert sorted(resumed) == list(range(N + 1, 2 * N + 1))
    # the same weights and optimizer state, other windows of the same stream (lanes re-dealt to one reader)
    assert abs(resumed[N + 1] - expected[N + 1]) < 0.3, (resumed, expected)


def test_a_muon_checkpoint_exports_to_a_verified_hf_folder(muon_run, tmp_path):
    from tinytitan.cli import main

    out = tmp_path / "hf"
    assert main(["export", str(muon_run / "checkpoint" / f"step-{2 * N}"), "--out", str(out),
                 "--config", str(MUON_CONFIG)]) == 0  # fmt: skip
    assert (out / "config.json").exists() and any(out.glob("*.safetensors"))
    assert '"LlamaForCausalLM"' in (out / "config.json").read_text()


def test_the_bad_group_line_is_raised_by_the_builder_too():
    """A library caller that skips the launcher's checks gets the same line from the optimizer builder."""
    from tinytitan.models import assign_groups

    with pytest.raises(TinytitanError, match=r"matches norm.weight \(1-D\)"):
        assign_groups([("norm.weight", (256,)), ("layers.0.attention.wq.weight", (256, 256))], ["*"])
