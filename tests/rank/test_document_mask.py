"""Document masking (``[model] attn_type = "flex"``, ``attn_mask_type = "block_causal"``) on the CPU.

torchtitan runs FlexAttention only through ``torch.compile`` (its ``FlexAttentionWrapper`` and the block
mask are compiled), so the first test compiles with inductor's CPU backend: slow to start, then it runs.
FlexAttention has no backward pass on the CPU: there, training takes the exact dense path
(``tinytitan.rank.attention``), checked against FlexAttention's forward, against documents run one at a
time (loss and gradients), and through the launcher.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from tests.helpers import REPO, launch, read_metrics, small_run_overrides

MASK = ["--model.attn_type", "flex", "--model.attn_mask_type", "block_causal"]


def test_block_causal_keeps_a_document_from_seeing_the_one_packed_before_it():
    from torchtitan.models.llama3 import Transformer

    from tinytitan.config import load_job_config
    from tinytitan.rank.spec import TrainingTokenizer, model_args
    from tinytitan.tokenizer import load_tokenizer

    tokenizer = TrainingTokenizer(load_tokenizer(REPO / "tinytitan" / "assets" / "tokenizer"))
    job = load_job_config(None, ["--model.attn_type", "flex", "--model.attn_mask_type", "block_causal",
                                 "--training.seq_len", "64"])  # fmt: skip
    args = model_args()["debug"]
    args.update_from_config(job)  # what the trainer does: the mask settings, and the EOS id it splits on
    assert (args.attn_type, args.attn_mask_type, args.eos_id) == ("flex", "block_causal", tokenizer.eos_id)
    assert tokenizer.eos_id != 0  # the id torchtitan's args print by default

    torch.manual_seed(0)
    masked = Transformer(args)
    with torch.no_grad():
        masked.init_weights()
    causal = Transformer(dataclasses.replace(args, attn_type="sdpa", attn_mask_type="causal"))
    causal.load_state_dict(masked.state_dict())

    def doc(text: str, n: int) -> list[int]:
        ids = tokenizer.encode(text, add_bos=False)
        assert len(ids) >= n
        return [tokenizer.bos_id, *ids[:n], tokenizer.eos_id]

    earlier = doc("In the beginning God created the heaven and the earth. And the earth was without form.", 18)
    other = doc("def walk(tree):\n    for node in tree:\n        yield from walk(node.children) if node else ()", 18)
    later = doc("The for statement is used to iterate over the elements of a sequence (such as a string, tuple "
                "or list) or other iterable object. The expression list is evaluated once; it should yield an "
                "iterable object, and the suite is then executed once for each item.", 64 - 2 - len(earlier))  # fmt: skip
    a = torch.tensor([earlier + later])
    b = torch.tensor([other + later])  # the same later document after a different one of the same length
    assert a.shape == (1, 64) and not torch.equal(a[:, : len(earlier)], b[:, : len(earlier)])
    start = len(earlier)

    masked.eval()
    causal.eval()
    with torch.no_grad():
        out_a = masked(a, attention_masks=masked.get_attention_masks(a, tokenizer))
        out_b = masked(b, attention_masks=masked.get_attention_masks(b, tokenizer))
        causal_a, causal_b = causal(a), causal(b)
    assert torch.equal(out_a[:, start:], out_b[:, start:])  # the later document sees only itself
    assert not torch.equal(out_a[:, :start], out_b[:, :start])
    assert (causal_a[:, start:] - causal_b[:, start:]).abs().max() > 1e-3  # causal attention reads across
    # the first document is computed the same way by both kernels (it has nothing before it to mask)
    assert torch.allclose(out_a[:, :start], causal_a[:, :start], atol=1e-4)

    # the CPU's training path (SDPA with the dense mask) computes what FlexAttention computes
    from tinytitan.rank.loss import TinyTransformer

    dense = TinyTransformer(dataclasses.replace(args, dense_mask=True))
    dense.load_state_dict(masked.state_dict())
    dense.eval()
    with torch.no_grad():
        out_dense = dense(a, attention_masks=dense.get_attention_masks(a, tokenizer))
    assert torch.allclose(out_dense, out_a, atol=1e-4)


def _sample_docs(tokenizer, lengths):
    text = (REPO / "tinytitan" / "rank" / "attention.py").read_text()  # any real text will do
    ids = tokenizer.encode(text, add_bos=False)
    docs, at = [], 0
    for n in lengths:
        docs.append([tokenizer.bos_id, *ids[at : at + n], tokenizer.eos_id])
        at += n
    return docs


def test_a_packed_batch_trains_like_its_documents_one_at_a_time():
    """Loss and gradients of [doc1 doc2 doc3] packed with the block-causal mask equal the sums over the three
    documents run alone: nothing leaks across an EOS, forward or backward (RoPE is relative, so a document's
    offset in the window changes nothing)."""
    from tinytitan.config import load_job_config
    from tinytitan.rank import attention
    from tinytitan.rank.loss import TinyTransformer
    from tinytitan.rank.spec import TrainingTokenizer, model_args
    from tinytitan.tokenizer import load_tokenizer

    tokenizer = TrainingTokenizer(load_tokenizer(REPO / "tinytitan" / "assets" / "tokenizer"))
    args = model_args()["debug"]
    args.update_from_config(load_job_config(None, [*MASK, "--training.seq_len", "96"]))
    args = dataclasses.replace(args, dense_mask=True)  # what a CPU rank sets (no FlexAttention backward there)
    torch.manual_seed(0)
    model = TinyTransformer(args)
    with torch.no_grad():
        model.init_weights()

    docs = _sample_docs(tokenizer, [20, 41, 29])
    packed = torch.tensor([sum(docs, [])])
    inputs, labels = packed[:, :-1], packed[:, 1:].clone()
    labels[inputs == tokenizer.eos_id] = -100  # the step from one document's EOS into the next one's BOS

    def loss_sum(tokens, targets, masked=True):
        masks = model.get_attention_masks(tokens, tokenizer) if masked else attention.masks(tokens, 0, "causal")
        logits = model(tokens, attention_masks=masks)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(0, 1), reduction="sum", ignore_index=-100)

    def grads():
        out = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        return out

    together = loss_sum(inputs, labels)
    together.backward()
    packed_grads = grads()
    alone = 0.0
    for doc in docs:
        t = torch.tensor([doc])
        one = loss_sum(t[:, :-1], t[:, 1:])
        one.backward()
        alone = alone + one.detach()
    alone_grads = grads()
    assert torch.allclose(together.detach(), alone, rtol=1e-5), (together.item(), alone.item())
    for name, grad in packed_grads.items():
        assert torch.allclose(grad, alone_grads[name], atol=1e-5, rtol=1e-4), name
    # without the mask the later documents read the earlier ones: the check above could fail
    with torch.no_grad():
        assert abs(loss_sum(inputs, labels, masked=False) - alone) > 1e-3


def test_document_masking_trains_through_the_launcher_on_cpu(tmp_path):
    dump = tmp_path / "run"
    proc = launch([*small_run_overrides(dump, steps=3, interval=3), *MASK])
    said = proc.stdout + proc.stderr
    assert "flex attention as SDPA with the exact block_causal mask" in said
    losses = [row["loss"] for row in read_metrics(dump) if "loss" in row]
    assert len(losses) == 3 and all(0 < loss < 20 for loss in losses)
    assert (dump / "checkpoint" / "step-3").is_dir()
