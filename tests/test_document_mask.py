"""Document masking (``[model] attn_type = "flex"``, ``attn_mask_type = "block_causal"``) on the CPU.

torchtitan runs FlexAttention only through ``torch.compile`` (its ``FlexAttentionWrapper`` and the block
mask are compiled), so this test compiles with inductor's CPU backend: slow to start, then it runs.
"""

from __future__ import annotations

import dataclasses

import torch

from tests.helpers import REPO


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
