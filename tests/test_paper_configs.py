"""The paper reproduction files validate against the experiment schema and the registered plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import Experiment, load_experiment
from harness.report.paper import find_reference

LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
PAPER_FILES = ["gemma2-9b-to-2b.yaml", "llama3-8b-to-1b.yaml"]


@pytest.mark.parametrize("name", PAPER_FILES)
def test_paper_config_validates_with_plugins(name: str) -> None:
    # Full validation: plugin names and each plugin's params (what `pad-harness validate` runs).
    exp = load_experiment(LEADERBOARDS / name)
    assert exp.sampling.n == 4 and exp.sampling.temperature == 1.0 and exp.sampling.top_p == 0.95
    assert exp.budget.learning_rate == 8e-7 and exp.budget.schedule == "cosine"
    assert exp.budget.warmup_ratio == 0.1 and exp.budget.epochs == 1 and exp.budget.effective_batch == 128
    assert exp.budget.max_length == 2048
    pads = {m.row_name: m.params for m in exp.methods if m.name == "pad"}
    assert pads == {"pad-ppd": {"beta": 10.0, "alpha": 0.0, "kind": "ppd"},
                    "pad-vpd": {"beta": 10.0, "alpha": 0.0, "kind": "vpd"},
                    "pad-released": {"beta": 10.0, "alpha": 0.0, "kind": "ppd", "reference_code_compat": True}}
    # As released (EganGu/PAD): 5 samples kept down to 4 from the first one, the released MCQ rule,
    # SimPO beta 10 / gamma 3 on a random pair, KD = reverse KL on the top-100 + NLL.
    assert (exp.sampling.candidates, exp.sampling.n, exp.sampling.first_pick) == (5, 4, "first")
    assert exp.signals.mcq == "released" and exp.signals.topk == 100
    params = {m.row_name: m.params for m in exp.methods}
    assert params["simpo"] == {"beta": 10.0, "gamma": 3.0, "pairs": "random"}
    assert params["kd"] == {"divergence": "reverse_kl", "nll_weight": 1.0}
    assert params["dpo"] == {"pairs": "random"}
    assert [b.name for b in exp.benchmarks] == ["alpaca_eval2", "arena_hard", "mt_bench", "gsm8k"]
    assert next(b for b in exp.benchmarks if b.name == "arena_hard").params == {"version": "v0.1"}
    assert exp.judge.backend == "openai" and exp.judge.model == "official" and exp.generation_backend == "vllm"
    # Answers as long as the official runs allow: the benchmarks' own defaults.
    assert [b.max_new_tokens for b in exp.benchmarks] == [None, None, None, None]
    assert exp.benchmarks[3].params == {"protocol": "zeroeval"}


def test_gemma_setting_and_its_paper_reference() -> None:
    exp = Experiment.model_validate(yaml.safe_load((LEADERBOARDS / "gemma2-9b-to-2b.yaml").read_text()))
    assert (exp.teacher.model, exp.student.model) == ("google/gemma-2-9b-it", "google/gemma-2-2b-it")
    assert (
        exp.prompts.source == "hf:HuggingFaceH4/ultrafeedback_binarized"
        and exp.prompts.split == "train_prefs"
    )
    ref = find_reference(exp.name, [LEADERBOARDS / "paper"])
    assert ref is not None
    reported = {(row, key): v["value"] for row, values in ref.rows.items() for key, v in values.items()}
    # Exactly the numbers the released README gives; nothing else may be recorded without a source.
    assert reported == {
        ("dpo", "alpaca_eval2.length_controlled_winrate"): 43.77,
        ("dpo", "accounting.gpu_hours"): 8.7856,
        ("simpo", "alpaca_eval2.length_controlled_winrate"): 44.94,
        ("simpo", "accounting.gpu_hours"): 7.2672,
        ("pad-released", "alpaca_eval2.length_controlled_winrate"): 45.73,
        ("pad-released", "accounting.gpu_hours"): 7.2884,
    }
    llama = Experiment.model_validate(yaml.safe_load((LEADERBOARDS / "llama3-8b-to-1b.yaml").read_text()))
    assert find_reference(llama.name, [LEADERBOARDS / "paper"]) is None


@pytest.mark.parametrize("name", PAPER_FILES)
def test_paper_config_dry_run_lists_every_row(name: str, monkeypatch, tmp_path, capsys) -> None:
    """`--dry-run` plans one train step per row (hub models stubbed: no download, no weights)."""
    from harness import pipeline
    from harness.cli import main
    from harness.stages import context

    monkeypatch.setattr(context, "model_key", lambda spec: {"model": spec.model, "stub": True})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(LEADERBOARDS / name), "--dry-run"]) == 0
    # Each benchmark's judge, the official one (offline: GSM8K's data may be missing, then it is skipped).
    out = capsys.readouterr().out
    assert "alpaca_eval2  " in out and "judge gpt-4-1106-preview (openai, official)" in out
    assert "judge gpt-4 (openai, official)" in out  # MT-Bench
    assert "NOT the official" not in out
    exp = load_experiment(LEADERBOARDS / name)
    plan = pipeline.Pipeline(exp, tmp_path / "run", progress=False).plan()
    trained = [step.label.rsplit("-seed", 1)[0] for step in plan if step.stage == "train"]
    rows = ["pad-ppd", "pad-vpd", "pad-released", "dpo", "simpo", "sft", "seqkd", "kd"]
    assert trained == [row for row in rows for _ in exp.seeds]


@pytest.mark.parametrize("name", PAPER_FILES)
def test_each_method_trains_with_its_released_schedule(name: str) -> None:
    """The released logs' learning rates at their logged steps (432 optimizer steps): DPO linear without
    warmup (gemma-log/dpo.log), SimPO and PAD cosine with 10% warmup (simpo.log, pad.log)."""
    from harness.training.schedule import learning_rate

    exp = load_experiment(LEADERBOARDS / name)
    budgets = {m.row_name: m.effective_budget(exp.budget) for m in exp.methods}

    def lr(row: str, step: int) -> float:
        b = budgets[row]
        return learning_rate(step, 432, b.learning_rate, b.warmup_ratio, b.schedule)

    logged = {("dpo", 5): 7.907407407407407e-07, ("dpo", 90): 6.333333333333332e-07,
              ("simpo", 5): 9.09090909090909e-08, ("simpo", 10): 1.818181818181818e-07,
              ("pad-ppd", 5): 9.09090909090909e-08, ("pad-released", 40): 7.272727272727272e-07}
    for (row, step), value in logged.items():
        assert lr(row, step) == pytest.approx(value, rel=1e-12), (row, step)
    assert budgets["dpo"].effective_batch == budgets["sft"].effective_batch == 128  # matched stays matched
