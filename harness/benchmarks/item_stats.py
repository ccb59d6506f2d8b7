"""Judge-free benchmark metrics from per-item records: means in percent with their standard errors.

`mean_metrics` is lm-eval's `mean` with its `mean_stderr` (sample std / sqrt(n)), in percent.
`pooled_metric` is a mean over units nested in items (IFEval's instruction-level accuracy: every instruction
of every prompt counts once, lm-eval's `agg_inst_level_acc`); its standard error treats the items as the
independent draws (instructions of one prompt are answered by one response), the linearised standard error
of a ratio of sums, where lm-eval reports none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from harness.benchmarks.base import ScoreResult


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, bool))


def mean_and_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std / sqrt(n) (lm-eval's mean_stderr), in the values' own units."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std / math.sqrt(n)


def pooled_mean_and_stderr(groups: Sequence[Sequence[float]]) -> tuple[float | None, float | None]:
    """Mean over every unit of every group, and its standard error with the groups as the sampling units.

    SE of the ratio estimator r = sum(x_i) / sum(m_i) over n groups (x_i: the group's sum, m_i: its size):
    sqrt(n / (n - 1) * sum((x_i - r m_i)^2)) / sum(m_i)."""
    groups = [g for g in groups if len(g)]
    total = sum(len(g) for g in groups)
    if total == 0:
        return None, None
    ratio = sum(sum(g) for g in groups) / total
    n = len(groups)
    if n < 2:
        return ratio, None
    spread = sum((sum(g) - ratio * len(g)) ** 2 for g in groups)
    return ratio, math.sqrt(n / (n - 1) * spread) / total


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def mean_metrics(records: list[dict[str, Any]], keys: list[str], headline: str,
                 notes: list[str] | None = None) -> ScoreResult:
    """Per key: the mean of the records' numeric values (percent) and `<key>_stderr`; per-item scores are
    the headline key's values (for paired bootstraps)."""
    metrics: dict[str, float | int | None] = {"n_total": len(records)}
    for key in keys:
        mean, stderr = mean_and_stderr([float(r[key]) for r in records if _is_number(r.get(key))])
        metrics[key], metrics[f"{key}_stderr"] = _percent(mean), _percent(stderr)
    per_item = [{"id": r["id"], "score": r.get(headline)} for r in records]
    return ScoreResult(metrics=metrics, notes=list(notes or []), per_item=per_item)


def add_pooled_metric(result: ScoreResult, records: list[dict[str, Any]], key: str, count_key: str) -> None:
    """`key` (percent) and `<key>_stderr` from records whose `key` is a list of per-unit outcomes; the number
    of units goes to `count_key`."""
    groups = [[float(v) for v in r[key]] for r in records if isinstance(r.get(key), list)]
    mean, stderr = pooled_mean_and_stderr(groups)
    result.metrics[key], result.metrics[f"{key}_stderr"] = _percent(mean), _percent(stderr)
    result.metrics[count_key] = sum(len(g) for g in groups)
