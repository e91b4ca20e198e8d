"""lm-eval on torchtitan's own model (TitanLM) agrees with lm-eval's HFLM on the export, offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import DEBUG_CONFIG, REPO
from tinytitan.cli import main
from tinytitan.observe.harness import SAMPLE_TASK, hf_harness_model, run_tasks, titan_lm
from tinytitan.observe.loading import from_checkpoint

LIMIT = 6  # documents: 24 loglikelihood requests


@pytest.fixture(scope="module")
def checkpoint_lm(debug_checkpoint):
    return from_checkpoint(debug_checkpoint, DEBUG_CONFIG)


def harness(lm, batch_size=5):
    return titan_lm(lambda ids: lm.module(ids), lm.tokenizer, lm.max_seq_len, lm.device, batch_size)


def per_choice(results) -> list[float]:
    samples = sorted(results["samples"][SAMPLE_TASK], key=lambda s: s["doc_id"])
    return [float(r[0][0]) for s in samples for r in s["resps"]]


def test_checkpoint_and_export_give_the_same_log_likelihoods(checkpoint_lm, debug_export):
    ours = run_tasks(harness(checkpoint_lm), [SAMPLE_TASK], limit=LIMIT, log_samples=True)
    theirs = run_tasks(hf_harness_model(debug_export, batch_size=3), [SAMPLE_TASK], limit=LIMIT, log_samples=True)
    a, b = per_choice(ours), per_choice(theirs)
    assert len(a) == len(b) == 4 * LIMIT
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    assert len(set(a)) == len(a)  # real, distinct scores
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"][SAMPLE_TASK][metric] == theirs["results"][SAMPLE_TASK][metric]
    # Every context starts with BOS, as every training document does.
    request = ours["samples"][SAMPLE_TASK][0]["arguments"][0]
    assert harness(checkpoint_lm).tok_encode(request[0])[0] == checkpoint_lm.bos_id


def test_rolling_and_generation_match_the_model(checkpoint_lm):
    from lm_eval.api.instance import Instance

    from tinytitan.observe.generate import generate, prompt_ids

    lm = harness(checkpoint_lm)
    text = "In the beginning God created the heaven and the earth."
    ids = torch.tensor([[checkpoint_lm.bos_id, *checkpoint_lm.encode(text)]])
    with torch.no_grad():
        full = torch.log_softmax(checkpoint_lm.module(ids).float(), -1)[0, :-1].gather(1, ids[0, 1:, None]).sum()
    (rolled,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    assert rolled == pytest.approx(float(full), abs=1e-4)  # BOS, then the document: as training scores it

    request = Instance("generate_until", {}, ("And God said", {"until": ["\n\n"], "max_gen_toks": 12}), 0)
    (out,) = lm.generate_until([request], disable_tqdm=True)
    greedy = generate(checkpoint_lm, prompt_ids(checkpoint_lm, "And God said"), 12, temperature=0.0)
    expected = checkpoint_lm.decode([t for t in greedy if t != checkpoint_lm.eos_id]).split("\n\n")[0]
    assert out == expected


def test_eval_tasks_json_reports_step_tokens_and_metrics(debug_checkpoint, capsys):
    args = ["eval", "tasks", "--checkpoint", str(debug_checkpoint)]  # flavor and tokenizer: the run's run.toml
    assert main([*args, "--tasks", SAMPLE_TASK, "--limit", "4", "--batch-size", "8", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["step"] == 20 and result["tokens"] == 20 * 2 * 4 * 256  # steps x ranks x batch x seq_len
    metrics = result["tasks"][SAMPLE_TASK]
    assert {"acc,none", "acc_norm,none"} <= set(metrics)
    assert all(0 <= metrics[m] <= 1 for m in ("acc,none", "acc_norm,none"))


def test_unknown_task_is_one_line(debug_checkpoint, capsys):
    args = ["eval", "tasks", "--checkpoint", str(debug_checkpoint), "--tasks", "no_such_task"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown lm-eval task(s) no_such_task" in err and err.count("\n") == 1


def test_include_path_adds_task_yamls(debug_checkpoint, tmp_path, capsys):
    import shutil

    from tinytitan.observe.harness import SHIPPED_TASKS

    folder = tmp_path / "tasks"
    shutil.copytree(SHIPPED_TASKS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = folder / f"{SAMPLE_TASK}.yaml"
    yaml.rename(folder / "my_copy.yaml")
    (folder / "my_copy.yaml").write_text((folder / "my_copy.yaml").read_text().replace(SAMPLE_TASK, "my_copy"))
    args = ["eval", "tasks", "--checkpoint", str(debug_checkpoint), "--json", "--limit", "2"]
    assert main([*args, "--tasks", "my_copy", "--include-path", str(folder)]) == 0
    assert set(json.loads(capsys.readouterr().out)["tasks"]) == {"my_copy"}
    assert main([*args, "--tasks", "my_copy", "--include-path", str(tmp_path / "absent")]) == 2
    assert "is not a folder of lm-eval task YAML files" in capsys.readouterr().err


def test_without_lm_eval_tasks_say_what_to_install(debug_checkpoint):
    """A Python where ``import lm_eval`` fails, as without the [eval] extra."""
    code = (
        "import sys; sys.modules['lm_eval'] = None\n"
        "from tinytitan.cli import main\n"
        f"sys.exit(main(['eval', 'tasks', '--checkpoint', {str(debug_checkpoint)!r}, '--config', {str(DEBUG_CONFIG)!r},"
        " '--tasks', 'hellaswag']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "tinytitan: error: lm-eval is not installed: pip install 'tinytitan[eval]' (or pip install 'lm-eval[hf]>=0.4,<0.5')\n"
    )


def test_trained_model_beats_random_init_on_the_offline_task(checkpoint_lm):
    """Measured on these 64 items: 0.78 after 20 steps (41k tokens), 0.30 at random init (seed 1234); 300 steps: 0.98 on all 256 (README)."""
    from tinytitan.observe.loading import from_random_init

    def accuracy(lm) -> float:
        return run_tasks(harness(lm, 32), [SAMPLE_TASK], limit=64)["results"][SAMPLE_TASK]["acc,none"]

    trained, chance = accuracy(checkpoint_lm), accuracy(from_random_init(DEBUG_CONFIG))
    assert chance <= 0.45 and trained >= chance + 0.25, f"trained {trained:.3f}, random init {chance:.3f}"
