"""Leaderboard columns: each benchmark's own (`Benchmark.columns`), then the training accounting.

A benchmark declares its columns, title and headline itself; this module turns them into the report's
`Column`s, keyed "<benchmark>.<metric>". A metric a run did not produce is an empty cell, never an error;
a benchmark that declares no columns (an lm-eval task, whose metrics depend on the task; a plugin, or a
name no installed plugin registers) still gets columns, derived from the metrics it reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.benchmarks.base import Benchmark, ReportColumn


@dataclass(frozen=True)
class Column:
    key: str  # stable id used in leaderboard.json/.csv and paper references: "<benchmark>.<metric>"
    label: str  # short header text
    group: str  # header group (the benchmark's title, "Accounting")
    benchmark: str | None  # None for accounting columns
    metric: str
    se_metric: str | None = None  # the run's own standard error of this metric, if the benchmark gives one
    ci_metrics: tuple[str, str] | None = None  # the run's own interval (low, high), e.g. a bootstrap CI
    digits: int = 2
    # a benchmark's main number: plotted and tested against the best baseline. One per benchmark: the one
    # it declares, or its declared fallback where no row has a value of that (`benchmark_columns`).
    headline: bool = False
    # The metric the benchmark's per-item scores (ScoreResult.per_item) measure, so the paired bootstrap vs
    # the best baseline runs on this column and is labelled by it; without one, the first headline column.
    paired: bool = False
    kind: str = "score"  # "score" | "count" | "seconds" | "bytes" | "flops" | "hours"
    higher_is_better: bool = True
    aliases: tuple[str, ...] = ()  # other names the same metric is recorded under (tried in order)

    @property
    def is_accounting(self) -> bool:
        return self.benchmark is None

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (self.metric, *self.aliases)

    @property
    def se_names(self) -> tuple[str, ...]:
        names = (self.se_metric,) if self.se_metric else ()
        return names + tuple(f"{a}_stderr" for a in self.aliases)


def _acct(metric: str, label: str, kind: str, digits: int = 0) -> Column:
    return Column(
        f"accounting.{metric}",
        label,
        "Accounting",
        None,
        metric,
        digits=digits,
        kind=kind,
        higher_is_better=False,
    )


ACCOUNTING_COLUMNS: tuple[Column, ...] = (
    _acct("student_forward_tokens", "Student fwd tok", "count"),
    _acct("student_backward_tokens", "Student bwd tok", "count"),
    _acct("teacher_forward_tokens", "Teacher fwd tok", "count"),
    _acct("teacher_generation_tokens", "Teacher gen tok", "count"),
    _acct("optimizer_steps", "Steps", "count"),
    _acct("wall_time_s", "Wall time", "seconds"),
    _acct("flops", "FLOPs", "flops"),
    _acct("gpu_hours", "GPU-h", "hours", digits=2),
    _acct("peak_memory_bytes", "Peak mem", "bytes"),
)

# Benchmark-level metrics that are interval bounds, counts or errors of another column, not columns.
_AUXILIARY_SUFFIXES = ("_stderr", "_standard_error", "standard_error", "ci_low", "ci_high", "_se")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _has_value(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def benchmark_columns(benchmark: str, cls: type[Benchmark] | None, metrics: Mapping[str, object],
                      headline: str = "", lower_is_better: frozenset[str] = frozenset()) -> list[Column]:
    """The columns of the results named `benchmark` (`cls`: its registered class, if any), given the metrics
    its rows recorded (`metrics`: each a number where any row has one). The declared headline stays the
    headline unless no row has a value of it and a `headline_fallback` column has one: that one leads then.
    `headline`: the results' own headline metric, for a class that declares none (one whose headline
    depends on its params); `lower_is_better`: the results' metrics ranked smaller-is-better, likewise."""
    title = (cls.title if cls is not None else "") or benchmark
    declared = cls.columns() if cls is not None else ()
    if not declared:
        return extra_columns(benchmark, metrics, title, (cls.headline if cls is not None else "") or headline,
                             lower_is_better)
    cols = [_column(benchmark, title, c) for c in declared]

    def recorded(c: ReportColumn) -> bool:
        return any(_has_value(metrics.get(name)) for name in (c.metric, *c.aliases))

    head = next((i for i, c in enumerate(declared) if c.headline), None)
    if head is not None and not recorded(declared[head]):
        fallback = next((i for i, c in enumerate(declared) if c.headline_fallback and recorded(c)), None)
        if fallback is not None:
            cols[head] = replace(cols[head], headline=False)
            cols[fallback] = replace(cols[fallback], headline=True)
    return cols


def _column(benchmark: str, title: str, c: ReportColumn) -> Column:
    return Column(
        f"{benchmark}.{c.metric}",
        c.label,
        title,
        benchmark,
        c.metric,
        se_metric=c.se_metric,
        ci_metrics=c.ci_metrics,
        digits=c.digits,
        headline=c.headline,
        paired=c.paired,
        kind=c.kind,
        higher_is_better=c.higher_is_better,
        aliases=c.aliases,
    )


def extra_columns(benchmark: str, metrics: Mapping[str, object], title: str | None = None,
                  headline: str = "", lower_is_better: frozenset[str] = frozenset()) -> list[Column]:
    """Columns for a benchmark that declares none: one per numeric metric it reports, the `headline` metric
    (else the first) as the headline, those in `lower_is_better` ranked smaller-is-better."""
    cols: list[Column] = []
    numeric = [k for k, v in metrics.items() if _is_number(v)]
    if headline not in numeric:
        headline = ""
    for metric in sorted(numeric):
        if metric.endswith(_AUXILIARY_SUFFIXES) or metric.startswith("n_"):
            continue
        se = next((m for m in (f"{metric}_stderr", f"{metric}_standard_error") if m in metrics), None)
        cols.append(
            Column(
                f"{benchmark}.{metric}",
                metric,
                title or benchmark,
                benchmark,
                metric,
                se_metric=se,
                headline=metric == headline if headline else not cols,
                higher_is_better=metric not in lower_is_better,
            )
        )
    return cols
