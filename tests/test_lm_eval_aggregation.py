"""Generic lm-eval tasks aggregate as lm-eval does: corpus-level metrics (mcc, bleu, perplexities) with the
aggregation the task declares, not per-sample means; the headline is the task's first declared metric."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.base import Answer, AnswerModel
from harness.benchmarks.lm_eval_adapter import full_task_spec
from harness.benchmarks.lm_eval_aggregate import aggregate, task_metrics
from harness.benchmarks.lm_eval_tasks import LMEvalTask


class NoGeneration(AnswerModel):
    """Log-likelihood tasks never ask for answers."""

    @property
    def name(self) -> str:
        return "no-generation"

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        raise AssertionError("a log-likelihood task asked for generated answers")


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _run(bench: LMEvalTask) -> tuple[Any, list[dict[str, Any]]]:
    data = bench.load()
    answers = bench.generate(NoGeneration(), data)
    return bench.score(bench.judge(None, data, answers)), answers


def test_mcc_is_lm_evals_corpus_value_and_the_first_declared_metric_leads(tmp_path: Path) -> None:
    """catcola (lm-eval's own task: metric_list [mcc, acc]) on 8 hand-made sentences; the fake model prefers
    "sí" exactly for sentences with "good": predictions 1,1,1,0,1,0,0,0 against labels 1,1,1,1,0,0,0,0."""
    predicted_yes = [True, True, True, False, True, False, False, False]
    docs = [{"Sentence": f"Sentence {i} is {'good' if yes else 'plain'}.", "Label": int(i < 4)}
            for i, yes in enumerate(predicted_yes)]
    bench = LMEvalTask(params={"task": "catcola", "data_files": {"validation": _jsonl(tmp_path / "v.jsonl", docs)}})
    bench.loglikelihood_fn = lambda pairs: [(-1.0 if (cont.strip() == "sí") == ("good" in ctx) else -2.0, False)
                                            for ctx, cont in pairs]
    result, answers = _run(bench)
    official = answers[0]["lm_eval_aggregate"]  # lm-eval's own results for this very run
    assert result.metrics["mcc,none"] == pytest.approx(official["mcc,none"], abs=1e-12) == pytest.approx(0.5)
    assert result.metrics["acc,none"] == pytest.approx(official["acc,none"]) == pytest.approx(0.75)
    from lm_eval.api.metrics import mean_stderr

    assert result.metrics["acc,none_stderr"] == pytest.approx(mean_stderr([1, 1, 1, 0, 0, 1, 1, 1]), abs=1e-12)
    assert result.headline == "mcc,none"  # declared first; "acc,none" sorts first
    assert result.per_item == []  # a correlation over the corpus has no per-item values to pair
    # The functions match those lm-eval's own task object aggregates with.
    own = bench._task().aggregation()
    assert {m.name: m.aggregation for m in task_metrics(full_task_spec("catcola"))} == own


def test_perplexities_are_weighted_as_lm_eval_weights_them(tmp_path: Path) -> None:
    """c4 (loglikelihood_rolling; word_perplexity, byte_perplexity, bits_per_byte over (loglik, count) pairs)."""
    docs = [{"text": "A short line of text."}, {"text": "Another, rather longer line of words here."},
            {"text": "Third."}]
    bench = LMEvalTask(params={"task": "c4", "data_files": {"validation": _jsonl(tmp_path / "c4.jsonl", docs)}})
    bench.loglikelihood_fn = lambda pairs: [(-0.3 * len(cont), True) for _, cont in pairs]
    result, answers = _run(bench)
    official = answers[0]["lm_eval_aggregate"]
    for key in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert result.metrics[key] == pytest.approx(official[key], rel=1e-12)
    lls = [-0.3 * len(d["text"]) for d in docs]
    words = [len(d["text"].split()) for d in docs]
    assert result.metrics["word_perplexity,none"] == pytest.approx(math.exp(-sum(lls) / sum(words)))
    assert result.headline == "word_perplexity,none"  # not the alphabetical bits_per_byte
    # lm-eval ranks all three smaller-is-better; the report must too.
    assert set(result.lower_is_better) == {"word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"}


def test_hand_made_samples_against_lm_evals_functions() -> None:
    from lm_eval.api.metrics import bleu, mean, perplexity

    spec = {"output_type": "generate_until", "filter_list": [{"name": "strict"}, {"name": "loose"}],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean"}, {"metric": "bleu"}]}
    pairs = [(["the cat sat on the mat"], "the cat sat on a mat"), (["a dog ran"], "a dog ran"),
             (["hello there world"], "goodbye world")]
    records = [{"id": i, "bleu,loose": [list(ref), pred], "exact_match,loose": float(i == 1),
                "exact_match,strict": 0.0} for i, (ref, pred) in enumerate(pairs)]
    out = aggregate(json.loads(json.dumps(records)), spec)  # as stored: tuples became lists
    assert out.metrics["bleu,loose"] == pytest.approx(bleu([[list(r), p] for r, p in pairs]))
    per_sample = [bleu([[list(r), p]]) for r, p in pairs]
    assert out.metrics["bleu,loose"] != pytest.approx(sum(per_sample) / 3)  # a corpus score, not a mean
    assert out.metrics["exact_match,loose"] == pytest.approx(mean([0.0, 1.0, 0.0]))
    assert out.headline == "exact_match,strict"  # first metric, first declared filter
    assert out.aggregations["bleu,loose"] == "bleu"
    rolling = aggregate([{"perplexity,none": -2.0}, {"perplexity,none": -4.0}, {"acc,none": 1}],
                        {"output_type": "loglikelihood"})  # no metric_list: the output type's defaults
    assert rolling.metrics["perplexity,none"] == pytest.approx(perplexity([-2.0, -4.0])) == pytest.approx(math.e ** 3)
    assert rolling.headline == "perplexity,none" and not rolling.per_item_mean


def test_the_report_heads_an_lm_eval_task_by_its_own_headline() -> None:
    from harness.report.leaderboard import build_leaderboard
    from harness.report.sample import sample_results
    from harness.results import BenchmarkResult

    results = sample_results(methods=("dpo",), seeds=(0,))
    for r in results.rows:
        r.benchmarks["lm_eval"] = BenchmarkResult("lm_eval", {"acc,none": 0.7, "mcc,none": 0.4},
                                                  headline="mcc,none")
    lb = build_leaderboard(results, n_boot=20)
    heads = [c.metric for c in lb.columns if c.benchmark == "lm_eval" and c.headline]
    assert heads == ["mcc,none"]


def test_the_report_ranks_a_perplexity_smaller_is_better() -> None:
    """A row with the LOWER perplexity is the best one (bold, and the side the bootstrap favours)."""
    from harness.report.leaderboard import build_leaderboard
    from harness.report.sample import sample_results
    from harness.results import BenchmarkResult

    results = sample_results(methods=("dpo", "simpo"), seeds=(0,))
    for r in results.rows:
        ppl = {"dpo": 9.0, "simpo": 30.0}.get(r.method or "", 20.0)
        r.benchmarks["lm_eval"] = BenchmarkResult("lm_eval", {"word_perplexity,none": ppl, "acc,none": 0.5},
                                                  headline="word_perplexity,none",
                                                  lower_is_better=["word_perplexity,none"])
    lb = build_leaderboard(results, n_boot=20)
    cols = {c.metric: c for c in lb.columns if c.benchmark == "lm_eval"}
    assert not cols["word_perplexity,none"].higher_is_better and cols["acc,none"].higher_is_better
    from harness.report.html import _best

    assert _best(lb, cols["word_perplexity,none"]) == "dpo" and _best(lb, cols["acc,none"]) in ("dpo", "simpo")
