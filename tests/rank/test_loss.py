"""The chunked output projection + cross-entropy ([loss] kind = "chunked") against torchtitan's plain loss.

In fp32 the two compute the same sums in a different order, so they agree to rounding: the loss
within a relative 1e-6, gradients within 1e-5 relative plus 1e-7 absolute (RTOL/ATOL below).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchtitan.components.loss import IGNORE_INDEX, cross_entropy_loss
from torchtitan.models.llama3 import Transformer

from tinytitan.config import load_job_config
from tinytitan.errors import TinytitanError
from tinytitan.job_config import validate_job_config
from tinytitan.models import flavor_args
from tinytitan.rank import loss as chunked_loss

RTOL, ATOL = 1e-5, 1e-7
LOSS_RTOL = 1e-6


def _batch(tokens: int, dim: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, dim, generator=g, dtype=torch.float64).float()
    w = (torch.randn(vocab, dim, generator=g, dtype=torch.float64) * dim**-0.5).float()
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    labels[::7] = IGNORE_INDEX  # ignored tokens, some at chunk borders
    labels[-3:] = IGNORE_INDEX
    return h, w, labels


def _plain(h, w, labels):
    return F.cross_entropy(h @ w.t(), labels, reduction="sum", ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("chunk", [1, 16, 37, 100, 1000])  # one token, exact division, a ragged last chunk, one chunk
def test_loss_and_gradients_equal_the_plain_loss(chunk):
    h, w, labels = _batch(100, 24, 301)
    valid = (labels != IGNORE_INDEX).sum()
    grads = []
    for fn in (_plain, lambda h, w, y: chunked_loss.linear_cross_entropy(h, w, y, chunk)):
        h_, w_ = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(h_, w_, labels)
        (loss / valid).backward()  # what the trainer does: the SUM over the global count of valid tokens
        grads.append((loss.detach(), h_.grad, w_.grad))
    (plain, gh, gw), (ours, ch, cw) = grads
    assert ours.dtype == torch.float32 and ours.dim() == 0
    torch.testing.assert_close(ours, plain, rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(ch, gh, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(cw, gw, rtol=RTOL, atol=ATOL)
    assert ch[labels == IGNORE_INDEX].abs().max() == 0  # ignored tokens get no gradient


def test_no_grad_gives_the_same_loss_without_a_graph():
    h, w, labels = _batch(50, 16, 97)
    w.requires_grad_()
    with torch.no_grad():
        loss = chunked_loss.linear_cross_entropy(h, w, labels, 8)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, _plain(h, w, labels), rtol=LOSS_RTOL, atol=0)


def test_gradient_accumulation_sums_like_the_plain_loss():
    """Two micro-batches, each divided by the tokens of both (torchtitan's global valid tokens)."""
    h, w, labels = _batch(80, 16, 97)
    total = (labels != IGNORE_INDEX).sum()
    grads = []
    for fn in (_plain, lambda h, w, y: chunked_loss.linear_cross_entropy(h, w, y, 12)):
        w_ = w.clone().requires_grad_()
        for part in (slice(0, 40), slice(40, 80)):
            (fn(h[part], w_, labels[part]) / total).backward()
        grads.append(w_.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=RTOL, atol=ATOL)


def test_bf16_autocast_is_as_accurate_as_the_plain_loss_under_autocast():
    """One GPU without FSDP trains fp32 weights under bf16 autocast; the chunks then multiply in bf16 too.

    bf16 products round differently chunk by chunk, so the gradients are compared with the exact
    (float64) gradient of the same bf16-rounded inputs: the chunked one is no further from it."""
    h, w, labels = _batch(256, 32, 211)
    exact_w = w.bfloat16().double().requires_grad_()
    exact = _plain(h.bfloat16().double(), exact_w, labels)
    exact.backward()
    results = []
    for fn in (_plain, lambda h, w, y: chunked_loss.linear_cross_entropy(h, w, y, 40)):
        w_ = w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(h, w_, labels)
        loss.backward()
        assert loss.dtype == w_.grad.dtype == torch.float32  # fp32 loss, gradient in the weight's own dtype
        results.append(((loss.double() - exact).abs().item(), (w_.grad.double() - exact_w.grad).norm().item()))
    (plain_loss_err, plain_grad_err), (loss_err, grad_err) = results
    assert loss_err <= 1e-6 * exact.abs().item() + plain_loss_err
    assert grad_err <= 1.25 * plain_grad_err, (grad_err, plain_grad_err)


def _tiny_args():
    return dataclasses.replace(flavor_args("debug"), dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=257)


def test_model_parameter_grads_equal_through_a_tiny_transformer():
    """TinyTransformer with the chunked output vs torchtitan's Transformer with the plain loss, same weights."""
    torch.manual_seed(0)
    args = _tiny_args()
    plain_model = Transformer(args)
    with torch.no_grad():
        plain_model.init_weights()
    model = chunked_loss.TinyTransformer(args)
    model.load_state_dict(plain_model.state_dict())
    job = load_job_config(None, ["--loss.kind", "chunked", "--loss.chunk_tokens", "24"])
    chunked_loss.attach(model, job)
    assert set(model.state_dict()) == set(plain_model.state_dict())  # checkpoints keep output.weight
    assert model.output.weight is dict(model.named_parameters())["output.weight"]

    tokens = torch.randint(0, args.vocab_size, (3, 20))
    labels = torch.randint(0, args.vocab_size, (3, 20))
    labels[0, :5] = IGNORE_INDEX
    valid = (labels != IGNORE_INDEX).sum()
    loss_fn = chunked_loss.build_loss(job)
    ours = loss_fn(model(tokens, **chunked_loss.model_inputs(loss_fn, labels)), labels)
    plain = cross_entropy_loss(plain_model(tokens), labels)
    (ours / valid).backward()
    (plain / valid).backward()
    torch.testing.assert_close(ours.detach(), plain.detach(), rtol=LOSS_RTOL, atol=0)
    plain_grads = dict(plain_model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain_grads[name].grad, rtol=RTOL, atol=ATOL, msg=name)
    # without labels (export, generation, in-loop eval): torchtitan's logits, and the loss falls back to plain
    with torch.no_grad():
        logits = model(tokens)
        torch.testing.assert_close(logits, plain_model(tokens), rtol=0, atol=0)
        torch.testing.assert_close(loss_fn(logits, labels), plain.detach(), rtol=LOSS_RTOL, atol=0)


def test_plain_kind_keeps_torchtitans_loss_and_output():
    job = load_job_config(None)
    assert job.loss.kind == "plain"
    model = chunked_loss.TinyTransformer(_tiny_args())
    chunked_loss.attach(model, job)
    assert type(model.output) is torch.nn.Linear
    assert chunked_loss.model_inputs(chunked_loss.build_loss(job), torch.zeros(1)) == {}


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["--parallelism.pipeline_parallel_degree", "2"], "pipeline_parallel_degree = 2"),
        (["--parallelism.tensor_parallel_degree", "2"], "tensor_parallel_degree = 2"),
        (["--model.converters", "quantize.linear.float8"], "filter_fqns"),
        (["--loss.chunk_tokens", "0"], "chunk_tokens = 0"),
    ],
)
def test_what_the_chunked_loss_cannot_run_with_is_refused(overrides, names):
    job = load_job_config(None, ["--loss.kind", "chunked", *overrides])
    with pytest.raises(TinytitanError, match=names):
        validate_job_config(job)


def test_a_bad_kind_is_one_line():
    with pytest.raises(TinytitanError, match="loss"):
        load_job_config(None, ["--loss.kind", "fused"])


def test_training_with_the_chunked_loss_matches_the_plain_run(uninterrupted, debug_run, tmp_path):
    """Through the launcher (2 gloo ranks, FSDP, fp32): the first two steps' training losses and the
    step-1 validation loss equal the plain runs' (the `uninterrupted` and `debug_run` fixtures: same
    data, seed and warm-up), and the checkpoint holds the same keys."""
    from torch.distributed.checkpoint import FileSystemReader

    from tests.helpers import N, launch, read_metrics, small_run_overrides, train_losses

    overrides = small_run_overrides(tmp_path, steps=2, interval=2)
    overrides += [
        "--loss.kind",
        "chunked",
        "--loss.chunk_tokens",
        "100",  # 1024 tokens per rank: 11 chunks
        "--validation.enable",
        "--validation.freq",
        "10",
        "--validation.steps",
        "2",
    ]  # as debug_run's
    proc = launch(overrides)
    assert "Chunked output projection + cross-entropy: 100 tokens per chunk" in proc.stdout + proc.stderr
    plain, ours = train_losses(uninterrupted), train_losses(tmp_path)
    assert sorted(ours) == [1, 2]
    for step in (1, 2):
        assert abs(ours[step] - plain[step]) <= 1e-5, (step, ours[step], plain[step])

    def validation(dump):
        return {r["step"]: r["validation/loss"] for r in read_metrics(dump) if "validation/loss" in r}

    assert sorted(validation(tmp_path)) == [1]  # torchtitan validates after step 1, then every freq steps
    assert abs(validation(tmp_path)[1] - validation(debug_run)[1]) <= 1e-5

    def keys(folder):
        return set(FileSystemReader(str(folder)).read_metadata().state_dict_metadata)

    assert keys(tmp_path / "checkpoint" / "step-2") == keys(uninterrupted / "checkpoint" / f"step-{N}")


def test_the_compiled_chunk_kernels_give_the_eager_results():
    """What `[compile] components = ["loss"]` does to them (dynamo + AOT autograd; inductor needs the GPU run)."""
    h, w, labels = _batch(90, 16, 97)
    results = []
    for kernels in (chunked_loss.EAGER, chunked_loss.Kernels("aot_eager")):
        w_ = w.clone().requires_grad_()
        loss = chunked_loss.linear_cross_entropy(h, w_, labels, 40, kernels)  # two shapes: 40 and 10 tokens
        loss.backward()
        with torch.no_grad():
            no_grad = chunked_loss.linear_cross_entropy(h, w_, labels, 40, kernels)
        results.append((loss.detach(), no_grad, w_.grad))
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=RTOL, atol=ATOL)


def test_a_second_backward_pass_is_refused():
    h, w, labels = _batch(20, 8, 31)
    loss = chunked_loss.linear_cross_entropy(h, w.requires_grad_(), labels, 8)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()
