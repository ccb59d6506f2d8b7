"""Paired comparisons over per-item scores: each method vs the best baseline, every row vs the untrained
student (with its minimum detectable difference), and what a run can resolve at all.

Every number here is in per-item units (the benchmark's `ScoreResult.per_item`), which need not be the
units of the column it is labelled by: a win-rate column is in percent while each item is a 0/1 win.
`per_item_label` names the units where the two differ, so a table never shows one under the other's label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.report.columns import Column
from harness.report.stats import is_number, paired_bootstrap
from harness.results import RowResult

if TYPE_CHECKING:
    from harness.report.leaderboard import LeaderRow

Groups = list[tuple[str, list[RowResult]]]

# Two-sided 5% test with 80% power: a true paired difference of (1.96 + 0.84) standard errors is detected
# four times in five. The minimum detectable difference of a (row, metric) is that many SEs of its diffs.
MDD_Z = 1.959964 + 0.841621
# A percentile bootstrap over a handful of items understates the spread (3 items have 10 distinct
# resamples): below this many items no difference is called resolved, whatever its interval.
MIN_ITEMS_TO_RESOLVE = 10


def _item_key(item: dict[str, Any]) -> str:
    # Multi-turn benchmarks record one judgement per (question, turn); the others one per item.
    return f"{item.get('id')}#{item['turn']}" if "turn" in item else str(item.get("id"))


def item_scores(runs: Sequence[RowResult], benchmark: str, key: str = "score") -> dict[str, float]:
    """Per-item scores (`key` of each per-item record) of a row, averaged over its seeds (items every seed
    has), for paired tests."""
    per_seed: list[dict[str, float]] = []
    for r in runs:
        b = r.benchmarks.get(benchmark)
        if b is None or not b.per_item:
            continue
        per_seed.append(
            {_item_key(it): float(it[key]) for it in b.per_item if is_number(it.get(key))}
        )
    if not per_seed:
        return {}
    shared = set.intersection(*(set(s) for s in per_seed))
    return {k: sum(s[k] for s in per_seed) / len(per_seed) for k in sorted(shared)}


def per_item_label(col: Column, groups: Groups, key: str) -> str:
    """`col`'s label over a table of its per-item scores (`key` of each record). A percent column whose
    items all lie in [0, 1] is a mean of fractions (a win counts 1, not 100): the label says "fraction"
    instead of "%", so a difference of 0.05 is not read as 0.05 points. Items recorded in percent (Arena-Hard's
    0-100 per question) exceed 1 somewhere and keep the "%"; all-zero items read the same either way."""
    label = f"{col.group} {col.label}"
    values = [float(it[key]) for _, runs in groups for r in runs if col.benchmark in r.benchmarks
              for it in r.benchmarks[col.benchmark].per_item if is_number(it.get(key))]
    if "%" not in col.label or not values or any(abs(v) > 1 for v in values):
        return label
    bare = col.label.replace("(%)", "").replace("%", "").strip()
    return f"{col.group} {bare} (fraction)"


def primary_column(columns: list[Column], benchmark: str, rows: list[LeaderRow]) -> Column | None:
    """The column the benchmark's per-item scores measure (`Column.paired`), else its first headline."""
    own = [c for c in columns if c.benchmark == benchmark]
    declared = [c for c in own if c.paired]
    for c in declared or [c for c in own if c.headline]:
        if any(c.key in r.cells for r in rows):
            return c
    return None


def _best_baseline(row: LeaderRow, method_rows: list[LeaderRow], col: Column,
                   proposed: Sequence[str]) -> LeaderRow | None:
    """The best method row by `col`'s mean other than `row`, among those not in `proposed`."""
    baselines = [b for b in method_rows if b.method not in proposed and b.row != row.row and col.key in b.cells]
    if not baselines:
        return None
    sign = 1.0 if col.higher_is_better else -1.0
    return max(baselines, key=lambda b: sign * b.cells[col.key].mean)


def _paired_entry(mine: dict[str, float], theirs: dict[str, float], n_boot: int, seed: int) -> dict[str, Any]:
    """The bootstrap of `mine` minus `theirs` over the items both have, as comparison fields."""
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        return {"n_items": 0, "diff": None, "p_value": None, "note": "no per-item scores shared by both rows"}
    res = paired_bootstrap([mine[k] for k in shared], [theirs[k] for k in shared], n_boot, seed)
    return {"n_items": len(shared), "diff": res.diff, "ci_low": res.ci_low, "ci_high": res.ci_high,
            "p_value": res.p_value, "n_boot": res.n_boot, "seed": res.seed}


def comparisons(groups: Groups, rows: list[LeaderRow], columns: list[Column], proposed: Sequence[str],
                n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Each method vs the best baseline (by the benchmark's headline mean), paired over items.

    Baselines are the method rows whose method is not in `proposed`; a baseline is compared with the
    best *other* baseline, so the best baseline is tested against the runner-up.
    """
    by_name = dict(groups)
    method_rows = [r for r in rows if r.kind == "method"]
    out: list[dict[str, Any]] = []
    for bench in sorted({b for _, runs in groups for r in runs for b in r.benchmarks}):
        col = primary_column(columns, bench, rows)
        if col is None:
            continue
        label = per_item_label(col, groups, "score")
        for row in method_rows:
            best = _best_baseline(row, method_rows, col, proposed)
            if best is None or col.key not in row.cells:
                continue
            mine, theirs = item_scores(by_name[row.row], bench), item_scores(by_name[best.row], bench)
            out.append({"row": row.row, "benchmark": bench, "metric": col.key, "metric_label": label,
                        "baseline": best.row, **_paired_entry(mine, theirs, n_boot, seed)})
    return out


def _paired_keys(columns: list[Column], bench: str, rows: list[LeaderRow],
                 runs: Sequence[RowResult]) -> list[tuple[Column, str]]:
    """The columns of `bench` whose metric every per-item record carries (teacher agreement records all of
    its metrics), else its primary column with the per-item `score`."""
    per_item = next((r.benchmarks[bench].per_item for r in runs if bench in r.benchmarks
                     and r.benchmarks[bench].per_item), [])
    own = [c for c in columns if c.benchmark == bench and any(c.key in r.cells for r in rows)]
    keyed = [(c, c.metric) for c in own if per_item and all(is_number(it.get(c.metric)) for it in per_item)]
    primary = primary_column(columns, bench, rows)
    return keyed or ([(primary, "score")] if primary is not None else [])


def _versus(mine: dict[str, float], theirs: dict[str, float], n_boot: int, seed: int) -> dict[str, Any] | None:
    """`mine` minus `theirs` paired over shared items, with its minimum detectable difference; None under
    2 shared items (no spread to size anything from)."""
    shared = sorted(set(mine) & set(theirs))
    if len(shared) < 2:
        return None
    a, b = [mine[k] for k in shared], [theirs[k] for k in shared]
    res = paired_bootstrap(a, b, n_boot, seed)
    spread = float((np.array(a) - np.array(b)).std(ddof=1))
    # identical per-item scores everywhere (e.g. all 0): no variance to size anything from
    mdd = MDD_Z * spread / math.sqrt(len(shared)) if spread > 0 else None
    return {"n_items": len(shared), "diff": res.diff, "ci_low": res.ci_low, "ci_high": res.ci_high,
            "p_value": res.p_value, "mdd": mdd,
            "resolved": len(shared) >= MIN_ITEMS_TO_RESOLVE and bool(res.ci_low > 0 or res.ci_high < 0)}


def vs_untrained(groups: Groups, rows: list[LeaderRow], columns: list[Column], n_boot: int,
                 seed: int) -> list[dict[str, Any]]:
    """Every row minus the untrained student, paired over items, per benchmark metric with per-item
    scores: the interval, and the minimum detectable difference (MDD_Z standard errors of the diffs)."""
    by_name = dict(groups)
    base = next((r for r in rows if r.kind == "student"), None)
    if base is None:
        return []
    present = {b for _, runs in groups for r in runs for b in r.benchmarks}
    # in column order (the report's leading benchmarks first), then any without a column
    benchmarks = list(dict.fromkeys([c.benchmark for c in columns if c.benchmark in present] + sorted(present)))
    out: list[dict[str, Any]] = []
    for bench in benchmarks:
        for col, key in _paired_keys(columns, bench, rows, by_name[base.row]):
            theirs = item_scores(by_name[base.row], bench, key)
            label = per_item_label(col, groups, key)
            for row in rows:
                if row.row == base.row:
                    continue
                entry = _versus(item_scores(by_name[row.row], bench, key), theirs, n_boot, seed)
                if entry is not None:
                    out.append({"row": row.row, "kind": row.kind, "benchmark": bench, "metric": col.key,
                                "metric_label": label, "per_item": key, "higher_is_better": col.higher_is_better,
                                **entry})
    return out


def _metric_resolution(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric's line of the resolution table from its vs-untrained entries."""
    methods = sorted(c["mdd"] for c in entries if c["kind"] == "method" and c["mdd"] is not None)
    teacher = next((c for c in entries if c["kind"] == "teacher"), None)
    first = entries[0]
    return {"benchmark": first["benchmark"], "metric": first["metric"], "metric_label": first["metric_label"],
            "n_items": first["n_items"], "median_method_mdd": methods[len(methods) // 2] if methods else None,
            "methods_resolved": sum(c["resolved"] for c in entries if c["kind"] == "method"),
            "methods": sum(c["kind"] == "method" for c in entries),
            "teacher_diff": teacher["diff"] if teacher else None,
            "teacher_resolved": teacher["resolved"] if teacher else None}


def resolution(vs: list[dict[str, Any]], groups: Groups) -> list[dict[str, Any]]:
    """Per benchmark metric: what this run can tell apart from the untrained student (the median MDD over
    the method rows, the teacher's difference); a benchmark with under 2 paired items can resolve nothing."""
    out = [_metric_resolution([c for c in vs if c["metric"] == metric])
           for metric in dict.fromkeys(c["metric"] for c in vs)]
    seen = {r["benchmark"] for r in out}
    for bench in sorted({b for _, runs in groups for r in runs for b in r.benchmarks} - seen):
        items = max((len(r.benchmarks[bench].per_item) for _, runs in groups for r in runs if bench in r.benchmarks),
                    default=0)
        out.append({"benchmark": bench, "metric": None, "metric_label": bench, "n_items": items,
                    "median_method_mdd": None, "methods_resolved": 0, "methods": 0, "teacher_diff": None,
                    "teacher_resolved": None, "note": "under 2 paired items: cannot resolve any difference"})
    return out

