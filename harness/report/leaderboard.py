"""Build the leaderboard of one experiment from its `RunResults`.

Rows: the teacher, the untrained student, then every method (in the experiment's order), each aggregated
over its training seeds. Columns: each benchmark's own (`Benchmark.columns`, in the experiment's order),
then the training accounting. Methods whose class is `proposed` are compared with the best baseline, and
every row with the untrained student, over per-item scores (`harness.report.paired`).
The result is a plain data structure (`Leaderboard.to_json()`) that every writer renders; no writer
computes a statistic of its own, so the JSON, CSV, Markdown and HTML always agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.report.columns import ACCOUNTING_COLUMNS, Column, benchmark_columns
from harness.report.flags import answer_flags
from harness.report.paired import comparisons, resolution, vs_untrained
from harness.report.plugins import benchmark_class, proposed_methods, train_curve
from harness.report.stats import is_number, item_bootstrap_se, mean_ci, pooled_run_se
from harness.report.tuning import tuning_status
from harness.results import BenchmarkResult, RowResult, RunResults

_KIND_ORDER = {"teacher": 0, "student": 1, "method": 2, "external": 3}


@dataclass
class Cell:
    mean: float
    values: list[float]  # one per seed, in seed order
    seed_low: float | None = None  # 95% t-interval over seeds (None with one seed)
    seed_high: float | None = None
    seed_sd: float | None = None
    run_se: float | None = None  # the benchmark's own standard error, pooled over seeds (RMS)
    run_ci_low: float | None = None  # the benchmark's own interval (single run: that run's; else mean)
    run_ci_high: float | None = None


@dataclass
class LeaderRow:
    row: str
    kind: str
    method: str | None
    models: list[str]
    seeds: list[int | None]
    cells: dict[str, Cell] = field(default_factory=dict)
    # "tuned (4 trials)" | "untuned" (methods); "external (not trained here)"; "" for the teacher and the
    # untrained student
    tuning: str = ""
    optimizer: dict[str, Any] = field(default_factory=dict)  # the settings it trained with (every seed's)


@dataclass
class Leaderboard:
    experiment_name: str
    experiment_hash: str
    setting: str
    columns: list[Column]
    rows: list[LeaderRow]
    comparisons: list[dict[str, Any]]  # paired bootstrap of each method vs the best baseline
    noise: list[dict[str, Any]]  # seed noise vs within-run noise per row and headline column
    sources: dict[str, dict[str, Any]]  # per benchmark: data source, judge, decoding, subset, notes
    # row -> [{seed, steps, values}] of the metric its method plots (`Method.train_curve`)
    train_curves: dict[str, list[dict[str, Any]]]
    provenance: dict[str, Any]
    experiment: dict[str, Any]
    proposed: list[str]
    paper: dict[str, Any] | None = None  # filled by harness.report.paper.attach_reference
    # per (row, benchmark): answers cut at max_new_tokens and whether the judge is official (report.flags)
    answer_flags: list[dict[str, Any]] = field(default_factory=list)
    # every row minus the untrained student, paired over items, with its minimum detectable difference
    vs_untrained: list[dict[str, Any]] = field(default_factory=list)
    # per benchmark metric: the median minimum detectable difference and what was resolved
    resolution: list[dict[str, Any]] = field(default_factory=list)
    # per tuned method: every trial's settings and dev score, the selected one, warnings, the search's cost
    tuning: dict[str, Any] = field(default_factory=dict)

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)

    def headline_columns(self) -> list[Column]:
        return [c for c in self.columns if c.headline and any(c.key in r.cells for r in self.rows)]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = [asdict(c) for c in self.columns]
        return data


def _value(row: RowResult, col: Column, names: Sequence[str] | None = None) -> float | None:
    """The first of `names` (default: the column's metric and its aliases) the run recorded as a number."""
    source: dict[str, Any]
    if col.benchmark is None:
        source = row.accounting
    else:
        bench = row.benchmarks.get(col.benchmark)
        source = dict(bench.metrics) if bench else {}
    for name in names or col.metric_names:
        v = source.get(name)
        if isinstance(v, (int, float)) and is_number(v):
            return float(v)
    return None


def columns_for(results: RunResults) -> list[Column]:
    """The columns of every benchmark the rows have (in the experiment's order, then any other by name),
    each asked of the benchmark's registered class, then the accounting columns."""
    bench_metrics: dict[str, dict[str, object]] = {}
    headlines: dict[str, str] = {}  # a result's own headline (benchmarks whose headline depends on params)
    lower: dict[str, set[str]] = {}  # and its metrics ranked smaller-is-better
    for r in results.rows:
        for name, b in r.benchmarks.items():
            if b.headline:
                headlines.setdefault(name, b.headline)
            lower.setdefault(name, set()).update(b.lower_is_better)
            seen = bench_metrics.setdefault(name, {})
            for metric, v in b.metrics.items():
                if metric not in seen or is_number(v):  # a number from any row counts as recorded
                    seen[metric] = v
    listed = [b.get("name") for b in results.experiment.get("benchmarks") or [] if isinstance(b, dict)]
    order = [b for b in dict.fromkeys(listed) if isinstance(b, str) and b in bench_metrics]
    order += sorted(set(bench_metrics) - set(order))
    scores: list[Column] = []
    for name in order:
        scores.extend(benchmark_columns(name, benchmark_class(name), bench_metrics[name], headlines.get(name, ""),
                                        frozenset(lower.get(name, ()))))
    return scores + list(ACCOUNTING_COLUMNS)


def _group_rows(results: RunResults) -> list[tuple[str, list[RowResult]]]:
    order: dict[str, int] = {}
    for i, m in enumerate(results.experiment.get("methods", []) or []):
        order[m.get("label") or m.get("name")] = i
    groups: dict[str, list[RowResult]] = {}
    for r in results.rows:
        groups.setdefault(r.row, []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))

    def sort_key(name: str) -> tuple[int, int, str]:
        kind = groups[name][0].kind
        return (_KIND_ORDER.get(kind, 3), order.get(name, len(order)), name)

    return [(name, groups[name]) for name in sorted(groups, key=sort_key)]


def _cell(runs: list[RowResult], col: Column) -> Cell | None:
    pairs = [(r, _value(r, col)) for r in runs]
    values = [v for _, v in pairs if v is not None]
    interval = mean_ci(values)
    if interval is None:
        return None
    cell = Cell(
        mean=interval.mean, values=values, seed_low=interval.low, seed_high=interval.high, seed_sd=interval.sd
    )
    if col.se_names:
        cell.run_se = pooled_run_se([_value(r, col, col.se_names) for r, v in pairs if v is not None])
    if col.ci_metrics:
        lows = [_value(r, col, (col.ci_metrics[0],)) for r, v in pairs if v is not None]
        highs = [_value(r, col, (col.ci_metrics[1],)) for r, v in pairs if v is not None]
        if all(x is not None for x in lows + highs):
            cell.run_ci_low = sum(x for x in lows if x is not None) / len(lows)
            cell.run_ci_high = sum(x for x in highs if x is not None) / len(highs)
    return cell


def _noise(
    groups: list[tuple[str, list[RowResult]]], rows: list[LeaderRow], columns: list[Column], seed: int
) -> list[dict[str, Any]]:
    by_name = dict(groups)
    out = []
    for row in rows:
        for col in columns:
            if not col.headline or col.key not in row.cells:
                continue
            cell = row.cells[col.key]
            runs = by_name[row.row]
            # Within-run noise from the items themselves where they are recorded (bootstrap SE of the
            # mean item score, in item units), else the benchmark's own reported standard error.
            item_ses = [
                item_bootstrap_se(
                    [
                        float(it["score"])
                        for it in r.benchmarks[col.benchmark].per_item
                        if is_number(it.get("score"))
                    ],
                    seed=seed,
                )
                for r in runs
                if col.benchmark in r.benchmarks and r.benchmarks[col.benchmark].per_item
            ]
            out.append(
                {
                    "row": row.row,
                    "column": col.key,
                    "n_seeds": len(cell.values),
                    "seed_sd": cell.seed_sd,
                    "seed_ci_half_width": None if cell.seed_high is None else cell.seed_high - cell.mean,
                    "run_se_reported": cell.run_se,
                    "item_bootstrap_se": pooled_run_se(item_ses),
                    "item_bootstrap_units": "per-item score (the benchmark's per_item 'score')",
                }
            )
    return out


def _sources(results: RunResults) -> dict[str, dict[str, Any]]:
    def add(bucket: dict[str, list[Any]], key: str, value: Any) -> None:
        if value in (None, "", {}, []):
            return
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if text not in bucket.setdefault(key, []):
            bucket[key].append(text)

    out: dict[str, dict[str, Any]] = {}
    for r in results.rows:
        for name, b in r.benchmarks.items():
            bucket = out.setdefault(name, {})
            _add_benchmark(add, bucket, b)
    return out


def _add_benchmark(add: Any, bucket: dict[str, Any], b: BenchmarkResult) -> None:
    add(bucket, "data_source", b.source)
    # Identity only: usage and cost differ per row and would split one judge into many entries.
    usage_keys = ("calls", "input_tokens", "output_tokens", "cost_usd", "usage")
    judge = {k: v for k, v in b.judge.items() if k not in usage_keys}
    add(bucket, "judge", judge)
    add(bucket, "decoding", b.decoding)
    add(bucket, "subset", b.subset)
    for note in b.notes:
        add(bucket, "notes", note)


def _train_curves(groups: list[tuple[str, list[RowResult]]]) -> dict[str, list[dict[str, Any]]]:
    """Per row whose method declares a `train_curve`: that metric of each seed's training log."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, runs in groups:
        curve = train_curve(runs[0].method)
        if curve is None:
            continue
        for r in runs:
            points = [
                (float(e.get("step", i)), float(e[curve.metric]))
                for i, e in enumerate(r.train_log)
                if is_number(e.get(curve.metric))
            ]
            if points:
                curves.setdefault(name, []).append(
                    {"seed": r.seed, "steps": [p[0] for p in points], "values": [p[1] for p in points]}
                )
    return curves


def build_leaderboard(
    results: RunResults, proposed: Sequence[str] | None = None, n_boot: int = 10_000, seed: int = 0
) -> Leaderboard:
    """`proposed`: the methods compared with the best baseline rather than counted among the baselines;
    None: those of the run's methods whose class says it is `proposed`."""
    columns = columns_for(results)
    groups = _group_rows(results)
    if proposed is None:
        proposed = proposed_methods(runs[0].method for _, runs in groups if runs[0].kind == "method")
    rows: list[LeaderRow] = []
    for name, runs in groups:
        lrow = LeaderRow(
            row=name,
            kind=runs[0].kind,
            method=runs[0].method,
            models=sorted({r.model for r in runs}),
            seeds=[r.seed for r in runs],
            tuning=tuning_status(runs),
            optimizer=dict(runs[0].optimizer),
        )
        for col in columns:
            cell = _cell(runs, col)
            if cell is not None:
                lrow.cells[col.key] = cell
        rows.append(lrow)
    return Leaderboard(
        experiment_name=results.experiment_name,
        experiment_hash=results.experiment_hash,
        setting=results.setting or results.experiment.get("setting", ""),
        columns=columns,
        rows=rows,
        comparisons=comparisons(groups, rows, columns, proposed, n_boot, seed),
        vs_untrained=(vs := vs_untrained(groups, rows, columns, n_boot, seed)),
        resolution=resolution(vs, groups),
        noise=_noise(groups, rows, columns, seed),
        sources=_sources(results),
        train_curves=_train_curves(groups),
        provenance=results.provenance,
        experiment=results.experiment,
        proposed=list(proposed),
        answer_flags=answer_flags(groups),
        tuning=dict(results.tuning),
    )
