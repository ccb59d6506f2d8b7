"""Benchmarks declare their own report columns and headline, methods their own `proposed` flag; the report
asks the registry and names none of them itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from harness.benchmarks.base import Benchmark, BenchmarkData, ReportColumn, ScoreResult
from harness.methods.base import Method
from harness.registry import BENCHMARKS, METHODS
from harness.report import build_leaderboard
from harness.report.sample import sample_results
from harness.results import BenchmarkResult

REPORT = Path(__file__).resolve().parents[1] / "harness" / "report"


@pytest.mark.parametrize("name", BENCHMARKS.names())
def test_every_benchmark_declares_its_headline_as_its_one_headline_column(name: str) -> None:
    cls = BENCHMARKS.get(name)
    cols = cls.columns()
    assert all(isinstance(c, ReportColumn) for c in cols)
    metrics = [c.metric for c in cols]
    assert len(metrics) == len(set(metrics)), f"{name}: a metric has two columns"
    heads = [c for c in cols if c.headline]
    if not cols:  # columns derived from the recorded metrics (lm_eval: they depend on the task)
        return
    assert cls.headline, f"{name} declares columns but no headline"
    assert [c.metric for c in heads] == [cls.headline], f"{name}: columns() disagrees with headline"
    assert not any(c.headline and c.headline_fallback for c in cols)
    assert cls.title, f"{name} declares columns but no title"


def test_only_pad_is_proposed_and_only_it_draws_a_training_curve() -> None:
    proposed = [m for m in METHODS.names() if METHODS.get(m).proposed]
    assert proposed == ["pad"]
    curve = METHODS.get("pad").train_curve
    assert curve is not None and curve.metric == "pad_agreement"


def test_proposed_rows_come_from_the_method_classes_unless_overridden() -> None:
    lb = build_leaderboard(sample_results(methods=("pad", "dpo", "sft"), seeds=(0,)), n_boot=50)
    assert lb.proposed == ["pad"]
    comp = {(c["row"], c["benchmark"]): c["baseline"] for c in lb.comparisons}
    assert comp[("pad", "arena_hard")] in ("dpo", "sft")  # PAD is never its own baseline
    assert build_leaderboard(sample_results(methods=("dpo", "sft"), seeds=(0,)), n_boot=50).proposed == []
    everyone = build_leaderboard(sample_results(methods=("pad", "dpo", "sft"), seeds=(0,)), proposed=[], n_boot=50)
    assert everyone.proposed == [] and any(c["baseline"] == "pad" for c in everyone.comparisons)


def _alpaca_headlines(lb: Any) -> list[str]:
    return [c.key for c in lb.headline_columns() if c.benchmark == "alpaca_eval2"]


def test_alpaca_eval_leads_with_lc_and_falls_back_to_wr_where_lc_is_unavailable() -> None:
    results = sample_results(methods=("pad", "dpo"), seeds=(0,))
    lb = build_leaderboard(results, n_boot=50)
    assert _alpaca_headlines(lb) == ["alpaca_eval2.length_controlled_winrate"]
    # the paired test still runs on WR, what the per-item scores measure
    assert {c["metric"] for c in lb.comparisons if c["benchmark"] == "alpaca_eval2"} == {"alpaca_eval2.win_rate"}
    for r in results.rows:  # LC unavailable (offline: no df_gamed.csv): None for every row
        r.benchmarks["alpaca_eval2"].metrics.update(length_controlled_winrate=None, lc_standard_error=None)
    assert _alpaca_headlines(build_leaderboard(results, n_boot=50)) == ["alpaca_eval2.win_rate"]


def test_columns_follow_the_experiments_benchmarks_and_only_those_present() -> None:
    results = sample_results(methods=("pad",), seeds=(0,))
    lb = build_leaderboard(results, n_boot=50)
    groups = list(dict.fromkeys(c.group for c in lb.columns))
    assert groups == ["AlpacaEval 2", "Arena-Hard", "MT-Bench", "GSM8K", "Accounting"]


class _ToyParams(BaseModel):
    pass


class _Toy(Benchmark):
    """A plugin benchmark with its own columns."""

    name: ClassVar[str] = "toy_bench"
    title: ClassVar[str] = "Toy"
    Params: ClassVar[type[BaseModel]] = _ToyParams
    headline: ClassVar[str] = "hits"

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        return (ReportColumn("misses", "Misses", higher_is_better=False), ReportColumn("hits", "Hits", headline=True))

    def load(self) -> BenchmarkData:
        return BenchmarkData([], "none")

    def generate(self, model: Any, data: BenchmarkData) -> list[dict[str, Any]]:
        return []

    def judge(self, judge: Any, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return []

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        return ScoreResult({})


class _Mine(Method):
    """A plugin method that is the one under study."""

    name: ClassVar[str] = "mine"
    Params: ClassVar[type[BaseModel]] = _ToyParams
    proposed: ClassVar[bool] = True

    def build_examples(self, groups: Any, rng: Any) -> list[dict[str, Any]]:
        return []

    def collate(self, examples: Any, ctx: Any) -> dict[str, Any]:
        return {}

    def loss(self, model: Any, batch: Any, ctx: Any) -> Any:
        raise NotImplementedError


def test_a_plugins_columns_and_proposed_flag_reach_the_report() -> None:
    BENCHMARKS.register("toy_bench", _Toy)
    METHODS.register("mine", _Mine)
    try:
        results = sample_results(methods=("mine", "dpo"), seeds=(0,))
        for r in results.rows:
            r.benchmarks["toy_bench"] = BenchmarkResult("toy_bench", {"hits": 3.0, "misses": 1.0})
            r.benchmarks["unknown_bench"] = BenchmarkResult("unknown_bench", {"b": 1.0, "a": 2.0, "a_stderr": 0.1})
        lb = build_leaderboard(results, n_boot=50)
    finally:
        BENCHMARKS.unregister("toy_bench")
        METHODS.unregister("mine")
    assert lb.proposed == ["mine"]
    toy = [c for c in lb.columns if c.benchmark == "toy_bench"]
    assert [(c.key, c.label, c.group, c.headline, c.higher_is_better) for c in toy] == [
        ("toy_bench.misses", "Misses", "Toy", False, False), ("toy_bench.hits", "Hits", "Toy", True, True)]
    unknown = [c for c in lb.columns if c.benchmark == "unknown_bench"]  # no plugin: derived from its metrics
    assert [(c.key, c.group, c.headline, c.se_metric) for c in unknown] == [
        ("unknown_bench.a", "unknown_bench", True, "a_stderr"), ("unknown_bench.b", "unknown_bench", False, None)]


def test_the_report_names_no_benchmark_and_no_method() -> None:
    names = set(BENCHMARKS.names()) | set(METHODS.names())
    for path in sorted(REPORT.glob("*.py")):
        if path.name == "sample.py":  # synthetic results: it has to make up benchmarks and methods
            continue
        text = path.read_text()
        found = sorted(n for n in names if re.search(rf"""["'`]{re.escape(n)}["'`.]""", text))
        assert not found, f"{path.name} names {found}"
