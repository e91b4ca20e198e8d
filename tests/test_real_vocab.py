"""The real 128,256-token Llama 3 vocabulary end to end (llama-models' tokenizer.model, converted):
Nano trains on CPU through the launcher with an exact resume, and its export tokenizes as training did."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import launch, small_run_overrides, train_losses
from tinytitan.cli import main
from tinytitan.data.encode import Encoder
from tinytitan.tokenizer import EMBEDDED_TOKENIZER, load_tokenizer

pytestmark = pytest.mark.slow  # minutes of training: started first (tests/conftest.py)

TEXT = "def greet(name):\n    return f'Hello, {name}!'  # 3 spaces   and unicode: café 東京"


@pytest.fixture(scope="module")
def nano_run(llama3_tokenizer, tmp_path_factory):
    """Nano with the real vocabulary: 2 steps of 2 x 2 sequences of 32 tokens; a full checkpoint at
    step 1 (resumable) and the weights at step 2 (exported). The loss is the chunked one, as in the
    Llama 3 configs (64 tokens per rank in chunks of 24: three, the last one shorter)."""
    dump = tmp_path_factory.mktemp("nano_real_vocab")
    overrides = [
        *small_run_overrides(dump, steps=2, interval=1),
        "--model.flavor", "nano", "--model.hf_assets_path", str(llama3_tokenizer),
        "--training.seq_len", "32", "--training.local_batch_size", "2", "--metrics.no-enable_tensorboard",
        "--checkpoint.last_save_model_only",  # step 2 (exported) needs only weights: 1.1 GB, not 3.3 GB
        "--loss.kind", "chunked", "--loss.chunk_tokens", "24",
    ]  # fmt: skip
    launch(overrides)
    return dump, overrides


def test_nano_trains_with_the_real_vocabulary_and_resumes_exactly(nano_run):
    dump, overrides = nano_run
    first = train_losses(dump)
    assert sorted(first) == [1, 2] and first[1] > 11.0  # ~ln(128256) = 11.76 at the start
    shutil.rmtree(dump / "checkpoint" / "step-2")
    launch(overrides)  # resumes from step 1
    rows = [json.loads(line) for line in (dump / "metrics.jsonl").read_text().splitlines() if line.strip()]
    resumed = [r["loss"] for r in rows if r.get("step") == 2 and "loss" in r]
    assert len(resumed) == 2 and resumed[1] == first[2]


def test_the_export_tokenizes_as_training_did(nano_run, llama3_tokenizer, tmp_path):
    from transformers import AutoTokenizer, pipeline

    dump, _ = nano_run
    out = tmp_path / "nano-hf"
    assert main(["export", str(dump / "checkpoint"), "--step", "latest", "--out", str(out),
                 "--tokenizer", str(llama3_tokenizer), "--flavor", "nano", "--no-verify"]) == 0  # fmt: skip
    trained = Encoder(load_tokenizer(llama3_tokenizer)).encode_docs([TEXT])[0].tolist()  # BOS ... EOS
    hf = AutoTokenizer.from_pretrained(out)
    assert hf(TEXT)["input_ids"] + [hf.eos_token_id] == trained
    generator = pipeline("text-generation", model=str(out), device="cpu")
    assert generator.tokenizer(TEXT)["input_ids"][0] == 128000 == generator.model.config.bos_token_id
    generated = generator(TEXT, max_new_tokens=2, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert isinstance(generated, str)


def test_prepare_records_the_real_tokenizer_hash(llama3_tokenizer, tmp_path):
    from tests.helpers import DEBUG_CONFIG

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in (TEXT, "<|eot_id|>")))
    config = tmp_path / "real.toml"
    debug = DEBUG_CONFIG.read_text()
    config.write_text(
        debug[: debug.index("[data]")]
        + f'[data]\n[[data.sources]]\nname = "docs"\npath = "{tmp_path / "docs"}"\nfiles = "*.jsonl"\n'
    )
    prepared = tmp_path / "prepared"
    rc = main(["data", "prepare", "--config", str(config), "--out", str(prepared), "--workers", "1",
               "--no-progress", "--", "--model.hf_assets_path", str(llama3_tokenizer)])  # fmt: skip
    assert rc == 0
    manifest = json.loads((prepared / "manifest.json").read_text())
    encoder = Encoder(load_tokenizer(llama3_tokenizer))
    assert manifest["tokenizer"] == encoder.fingerprint() != Encoder(load_tokenizer(EMBEDDED_TOKENIZER)).fingerprint()
    assert manifest["sources"]["docs"]["tokens"] == encoder.encode_docs([TEXT, "<|eot_id|>"])[0].size
