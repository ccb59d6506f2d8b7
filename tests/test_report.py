"""Leaderboard statistics, table building, writers, paper references and merging, on hand-made results."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.report import build_leaderboard, merge_results, merge_runs, write_reports
from harness.report.merge import MergeError
from harness.report.paper import find_reference, load_reference
from harness.report.sample import sample_results
from harness.report.stats import item_bootstrap_se, mean_ci, paired_bootstrap, t_quantile_975
from harness.report.writers import cell_text
from harness.results import BenchmarkResult, RunResults

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ statistics
def test_t_interval_matches_hand_computed() -> None:
    # values 1, 2, 3: mean 2, sd 1, t_{0.975,2} = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    iv = mean_ci([1.0, 2.0, 3.0])
    assert iv is not None and iv.n == 3 and iv.sd == pytest.approx(1.0)
    assert iv.mean == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(2.484138, abs=1e-4)
    assert (iv.low, iv.high) == (pytest.approx(2 - 2.484138, abs=1e-4), pytest.approx(2 + 2.484138, abs=1e-4))
    # two seeds: t_{0.975,1} = 12.706; sd of (10, 12) = sqrt(2) -> 12.706 * sqrt(2)/sqrt(2) = 12.706
    two = mean_ci([10.0, 12.0])
    assert two is not None and two.half_width == pytest.approx(12.706, abs=1e-3)


def test_t_quantiles_beyond_the_table_and_degenerate_inputs() -> None:
    assert t_quantile_975(60) == pytest.approx(2.000298, abs=2e-4)
    assert t_quantile_975(120) == pytest.approx(1.979930, abs=2e-4)
    assert t_quantile_975(10_000) == pytest.approx(1.96, abs=1e-3)
    one = mean_ci([5.0])
    assert one is not None and one.low is None and one.half_width is None
    assert mean_ci([]) is None


def test_paired_bootstrap_direction() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.2, 200)
    better = paired_bootstrap(base + 0.3 + rng.normal(0, 0.05, 200), base, n_boot=2000, seed=0)
    assert better.diff > 0.25 and better.ci_low > 0 and better.p_value < 0.01
    worse = paired_bootstrap(base - 0.3, base, n_boot=2000, seed=0)
    assert worse.diff < 0 and worse.p_value < 0.01
    same = paired_bootstrap(base, base, n_boot=2000, seed=0)
    assert same.diff == 0 and same.p_value == 1.0
    noisy = paired_bootstrap(base + rng.normal(0, 0.2, 200), base, n_boot=2000, seed=0)
    assert noisy.p_value > 0.05  # no real difference: not significant
    assert paired_bootstrap(base + 0.01, base, 500, seed=3) == paired_bootstrap(
        base + 0.01, base, 500, seed=3
    )
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_item_bootstrap_se_close_to_analytic() -> None:
    x = np.random.default_rng(0).random(400)
    analytic = x.std(ddof=1) / math.sqrt(x.size)
    assert item_bootstrap_se(x.tolist(), n_boot=4000) == pytest.approx(analytic, rel=0.08)
    assert item_bootstrap_se([1.0]) is None


# ------------------------------------------------------------------ leaderboard
def test_leaderboard_rows_cells_and_intervals() -> None:
    results = sample_results(methods=("pad", "dpo"), seeds=(0, 1))
    lb = build_leaderboard(results, n_boot=500)
    assert [r.row for r in lb.rows] == ["teacher", "student (untrained)", "pad", "dpo"]
    pad = next(r for r in lb.rows if r.row == "pad")
    seeds = [r for r in results.rows if r.row == "pad"]
    wr = [r.benchmarks["alpaca_eval2"].metrics["win_rate"] for r in seeds]
    cell = pad.cells["alpaca_eval2.win_rate"]
    assert cell.mean == pytest.approx(sum(wr) / 2)
    assert cell.seed_high - cell.mean == pytest.approx(12.7062 * abs(wr[0] - wr[1]) / 2, rel=1e-4)
    assert cell.run_se == pytest.approx(
        math.sqrt(sum(r.benchmarks["alpaca_eval2"].metrics["standard_error"] ** 2 for r in seeds) / 2)
    )
    assert pad.seeds == [0, 1] and pad.cells["accounting.optimizer_steps"].mean == 432
    teacher = lb.rows[0]
    assert "accounting.flops" not in teacher.cells  # no training: an empty cell, not a zero
    assert "(SE" in cell_text(lb.column("alpaca_eval2.win_rate"), teacher.cells["alpaca_eval2.win_rate"])
    assert "[" in cell_text(lb.column("arena_hard.score"), teacher.cells["arena_hard.score"])
    assert set(lb.train_curves) == {"pad"} and len(lb.train_curves["pad"]) == 2
    assert {n["row"] for n in lb.noise} == {"teacher", "student (untrained)", "pad", "dpo"}


def test_missing_metrics_and_extra_benchmarks_are_tolerated() -> None:
    results = sample_results(methods=("pad",), seeds=(0,))
    for r in results.rows:
        r.benchmarks["alpaca_eval2"].metrics["length_controlled_winrate"] = None  # LC unavailable offline
        del r.benchmarks["mt_bench"]
        r.benchmarks["arc_easy"] = BenchmarkResult("arc_easy", {"acc": 0.7, "acc_stderr": 0.01, "n_items": 5})
        # the GSM8K plugin's own metric names (lm-eval filter names)
        r.benchmarks["gsm8k"].metrics = {
            "strict_match": 40.0,
            "strict_match_stderr": 2.0,
            "flexible_extract": 45.0,
        }
    lb = build_leaderboard(results, n_boot=200)
    gsm = lb.rows[0].cells["gsm8k.exact_match_strict"]
    assert (gsm.mean, gsm.run_se) == (40.0, 2.0)
    assert lb.rows[0].cells["gsm8k.exact_match_flexible"].mean == 45.0
    keys = {c.key for c in lb.columns}
    assert "arc_easy.acc" in keys and "arc_easy.acc_stderr" not in keys and "arc_easy.n_items" not in keys
    assert lb.rows[0].cells["arc_easy.acc"].run_se == pytest.approx(0.01)
    assert all("alpaca_eval2.length_controlled_winrate" not in r.cells for r in lb.rows)
    assert all("mt_bench.overall" not in r.cells for r in lb.rows)
    assert "alpaca_eval2.win_rate" in [c.key for c in lb.headline_columns()]


def test_clearly_better_method_beats_best_baseline() -> None:
    results = sample_results(
        methods=("pad", "dpo", "sft"), seeds=(0, 1), quality={"pad": 0.9, "dpo": 0.25, "sft": 0.2}
    )
    lb = build_leaderboard(results, n_boot=2000)
    comp = {(c["row"], c["benchmark"]): c for c in lb.comparisons}
    pad_alpaca = comp[("pad", "alpaca_eval2")]
    assert (
        pad_alpaca["baseline"] in ("dpo", "sft") and pad_alpaca["diff"] > 0 and pad_alpaca["p_value"] < 0.01
    )
    assert comp[("dpo", "alpaca_eval2")]["baseline"] == "sft"  # a baseline is tested against the other one
    assert ("teacher", "alpaca_eval2") not in comp


# ------------------------------------------------------------------ writers
def test_writers_produce_the_four_files(tmp_path: Path) -> None:
    results = sample_results(methods=("pad", "dpo"), seeds=(0, 1))
    paths = write_reports(results, tmp_path, paper_dirs=[], n_boot=300)
    assert {p.name for p in paths.values()} == {
        "leaderboard.json",
        "leaderboard.csv",
        "LEADERBOARD.md",
        "report.html",
    }
    data = json.loads(paths["json"].read_text())
    assert [r["row"] for r in data["rows"]] == ["teacher", "student (untrained)", "pad", "dpo"]
    assert data["paper"] is None
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["row"] for r in rows] == ["teacher", "student (untrained)", "pad", "dpo"]
    assert float(rows[2]["alpaca_eval2.win_rate"]) == pytest.approx(
        data["rows"][2]["cells"]["alpaca_eval2.win_rate"]["mean"]
    )
    assert rows[0]["accounting.flops"] == ""
    md = paths["markdown"].read_text()
    assert "| pad | 2 |" in md and "Paired bootstrap" in md and "git_commit" in md
    html = paths["html"].read_text()
    assert (
        html.count("<svg") >= 6 and 'id="scores"' in html and "PAD preference-distribution agreement" in html
    )


def test_per_item_tables_label_fractions_as_fractions(tmp_path: Path) -> None:
    """A percent column's per-item scores are fractions (a win counts 1, not 100): the per-item tables (what
    the run resolves, vs the untrained student, vs the best baseline) label them as such, never with a %.
    A benchmark that records each item in percent (Arena-Hard's scoring does) keeps the column's label."""
    results = sample_results(methods=("pad", "dpo"), seeds=(0,))
    for r in results.rows:
        for it in r.benchmarks["arena_hard"].per_item:
            it["score"] *= 100
    paths = write_reports(results, tmp_path, paper_dirs=[], n_boot=100)
    board = json.loads(paths["json"].read_text())
    per_item = board["resolution"] + board["vs_untrained"] + board["comparisons"]
    alpaca = [c for c in per_item if c["metric"] == "alpaca_eval2.win_rate"]
    assert len(alpaca) == 1 + 3 + 1  # its resolution line; teacher, pad, dpo vs untrained; pad vs dpo
    assert {c["metric_label"] for c in alpaca} == {"AlpacaEval 2 WR (fraction)"}
    assert all(abs(c["diff"]) <= 1 for c in alpaca if c.get("diff") is not None)  # fractions indeed
    arena = {c["metric_label"] for c in per_item if c["metric"] == "arena_hard.score"}
    assert arena == {"Arena-Hard Score (%)"}
    md = paths["markdown"].read_text()
    per_item_md = md.split("## What this run can resolve")[1].split("## Seed noise")[0]
    assert "| AlpacaEval 2 WR (fraction) |" in per_item_md and "WR (%)" not in per_item_md
    html = paths["html"].read_text()
    assert ">AlpacaEval 2 WR (fraction)<" in html and "AlpacaEval 2 WR (%)" not in html


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    results = sample_results(methods=("pad",), seeds=(0,))
    evil = '<script>alert("x")</script>'
    results.rows[-1].row = evil
    results.rows[-1].benchmarks["alpaca_eval2"].source = '<img src="https://evil.example/x.png">'
    results.provenance["note"] = '<a href="http://evil.example">x</a>'
    html = write_reports(results, tmp_path, paper_dirs=[], n_boot=100)["html"].read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert "&lt;script&gt;" in html


# ------------------------------------------------------------------ paper references
def test_paper_reference_side_by_side(tmp_path: Path) -> None:
    ref = find_reference("gemma2-9b-to-2b", [REPO / "leaderboards" / "paper"])
    assert ref is not None
    # The README's training report ran the released loss: the `pad-released` row of the paper configs.
    assert ref.value("pad-released", "alpaca_eval2.length_controlled_winrate")["value"] == 45.73
    assert ref.value("dpo", "alpaca_eval2.length_controlled_winrate")["value"] == 43.77
    assert ref.value("simpo", "alpaca_eval2.length_controlled_winrate")["value"] == 44.94
    assert ref.value("pad-released", "arena_hard.score") is None  # not given by any recorded source: left empty
    results = sample_results(methods=("pad", "dpo", "simpo"), seeds=(0,))
    rows = [replace(r, row="pad-released") if r.row == "pad" else r for r in results.rows]
    results = replace(results, experiment_name="gemma2-9b-to-2b", rows=rows)
    paths = write_reports(results, tmp_path, paper_dirs=[REPO / "leaderboards" / "paper"], n_boot=100)
    md = paths["markdown"].read_text()
    assert "Reproduced vs reported" in md and "45.73 [readme]" in md and "7.29 [readme]" in md
    assert 'id="paper"' in paths["html"].read_text()


def test_paper_reference_rejects_unsourced_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "experiments: [x]\nsources: {a: {citation: c}}\nrows: {pad: {arena_hard.score: {value: 1}}}\n"
    )
    with pytest.raises(Exception, match="value.*source"):
        load_reference(bad)


# ------------------------------------------------------------------ merging
def _save(results: RunResults, run_dir: Path) -> Path:
    results.save(run_dir / "results.json")
    return run_dir


def test_merge_refuses_mismatching_experiments(tmp_path: Path) -> None:
    a = sample_results(methods=("pad",), seeds=(0,))
    b = sample_results(methods=("dpo",), seeds=(0,), judge_model="gpt-4o")
    with pytest.raises(MergeError, match=r"judge\.model: \"gpt-4-turbo\" vs \"gpt-4o\""):
        merge_runs([_save(a, tmp_path / "a"), _save(b, tmp_path / "b")])
    c = sample_results(methods=("dpo",), seeds=(0,))
    c = replace(c, experiment_hash="other")
    with pytest.raises(MergeError, match="experiment_hash"):
        merge_results([a, c])


def test_merge_matching_runs_adds_the_new_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = sample_results(methods=("pad", "dpo"), seeds=(0, 1), seed=0)
    b = sample_results(methods=("newplugin",), seeds=(0, 1), seed=1)
    merged = merge_runs([_save(a, tmp_path / "a"), _save(b, tmp_path / "b")])
    assert sorted({r.row for r in merged.rows}) == [
        "dpo",
        "newplugin",
        "pad",
        "student (untrained)",
        "teacher",
    ]
    assert len([r for r in merged.rows if r.kind == "teacher"]) == 1  # the base run's teacher row is kept
    assert [m["name"] for m in merged.experiment["methods"]] == ["pad", "dpo", "newplugin"]
    assert len(merged.provenance["merged_from"]) == 2
    assert (
        main(
            ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--n-boot", "100", "--paper-dir", str(tmp_path)]
        )
        == 0
    )
    out = tmp_path / "a" / "merged"
    assert (out / "report.html").is_file() and (out / "results.json").is_file()
    rows = [r["row"] for r in json.loads((out / "leaderboard.json").read_text())["rows"]]
    assert rows == ["teacher", "student (untrained)", "pad", "dpo", "newplugin"]
    # the same method and seed with different numbers in two runs is ambiguous: refused
    dup = sample_results(methods=("pad",), seeds=(0,), seed=5)
    with pytest.raises(MergeError, match="'pad' seed 0"):
        merge_results([a, dup])
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no results.json" in capsys.readouterr().err
