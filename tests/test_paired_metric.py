"""The paired bootstrap vs the best baseline runs on, and is labelled by, the metric the per-item scores measure."""

from __future__ import annotations

from harness.benchmarks.alpaca_eval2 import AlpacaEval2
from harness.report import build_leaderboard
from harness.report.sample import sample_results


def test_alpaca_eval_pairs_on_win_rate_not_lc() -> None:
    # AlpacaEval's per-item scores are judge preferences: the test compares WR, whatever LC says.
    [paired] = [c for c in AlpacaEval2.columns() if c.paired]
    assert paired.metric == "win_rate"
    results = sample_results(methods=("pad", "dpo", "sft"), seeds=(0,),
                             quality={"pad": 0.6, "dpo": 0.45, "sft": 0.3})
    for r in results.rows:  # LC ranks the baselines the other way round: sft above dpo
        if r.row == "sft":
            r.benchmarks["alpaca_eval2"].metrics["length_controlled_winrate"] = 90.0
    lb = build_leaderboard(results, n_boot=200)
    comp = {(c["row"], c["benchmark"]): c for c in lb.comparisons}
    pad = comp[("pad", "alpaca_eval2")]
    assert pad["metric"] == "alpaca_eval2.win_rate"
    assert pad["metric_label"] == "AlpacaEval 2 WR (fraction)"  # each item a 0/1 win, not a percent
    assert pad["baseline"] == "dpo"  # the best baseline by WR, the metric being compared
    # Benchmarks that declare nothing keep their first headline column.
    assert comp[("pad", "arena_hard")]["metric"] == "arena_hard.score"
    assert comp[("pad", "arena_hard")]["metric_label"] == "Arena-Hard Score (fraction)"


def test_no_alpaca_comparison_is_labelled_lc_when_wr_is_missing() -> None:
    results = sample_results(methods=("pad", "dpo"), seeds=(0,))
    for r in results.rows:
        del r.benchmarks["alpaca_eval2"].metrics["win_rate"]
    lb = build_leaderboard(results, n_boot=100)
    assert not [c for c in lb.comparisons if c["benchmark"] == "alpaca_eval2"]
