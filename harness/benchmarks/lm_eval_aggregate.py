"""A generic lm-eval task's metrics as lm-eval aggregates them, from the per-sample values it logged.

lm-eval turns each metric's per-sample values into one number with the aggregation its task config names
(`metric_list[].aggregation`, else the metric's registered default; without a `metric_list`, the output
type's default metrics): `mean` for accuracies, but corpus-level functions for others (`bleu`, `f1`,
`matthews_corrcoef`, `perplexity`, `weighted_perplexity`, `bits_per_byte`, a task's own `!function`), whose
value is not the mean of per-sample values. `task_metrics` resolves those functions from the installed task's
own config as `ConfigurableTask.__init__` does (no data loaded); `aggregate` applies them per "metric,filter"
key as lm-eval's `_compute_task_aggregations` does (a metric without a known aggregation: `mean`, as there).
The headline is the task's FIRST declared metric under its first filter, the one lm-eval lists first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Aggregation = Callable[[list[Any]], float]


@dataclass(frozen=True)
class TaskMetric:
    name: str
    aggregation: Aggregation
    aggregation_name: str  # e.g. "mean", "bleu", or the function's own name
    higher_is_better: bool | None


def _name_of(fn: Any) -> str:
    from lm_eval.api.registry import AGGREGATION_REGISTRY

    inverse = {v: k for k, v in AGGREGATION_REGISTRY.items()}
    return str(inverse.get(fn, getattr(fn, "__name__", repr(fn))))


def task_metrics(spec: dict[str, Any]) -> list[TaskMetric]:
    """The task's metrics in declared order, each with the aggregation lm-eval uses for it (`spec`: the task
    config with functions resolved, `lm_eval_adapter.full_task_spec`)."""
    from lm_eval.api.metrics import mean
    from lm_eval.api.registry import (
        DEFAULT_METRIC_REGISTRY,
        get_aggregation,
        get_metric_aggregation,
        is_higher_better,
    )

    declared = spec.get("metric_list")
    if declared is None:
        names = DEFAULT_METRIC_REGISTRY[spec.get("output_type") or "generate_until"]
        declared = [{"metric": name} for name in names]
    out = []
    for entry in declared:
        metric = entry["metric"]
        name = metric.__name__ if callable(metric) else str(metric)
        agg = entry.get("aggregation")
        fn = get_aggregation(agg) if isinstance(agg, str) else agg if callable(agg) else get_metric_aggregation(name)
        fn = fn or mean
        better = entry["higher_is_better"] if "higher_is_better" in entry else is_higher_better(name)
        out.append(TaskMetric(name, fn, _name_of(fn), better))
    return out


def filter_names(spec: dict[str, Any]) -> list[str]:
    """The task's filters in declared order ("none" when it declares none), as lm-eval keys its results."""
    filters = spec.get("filter_list")
    return [str(f["name"]) for f in filters] if filters else ["none"]


@dataclass
class Aggregated:
    metrics: dict[str, float | int | None]  # "metric,filter" (and "metric,filter_stderr" where closed-form)
    headline: str  # the first declared metric under the first filter that has values
    per_item_mean: bool  # the headline aggregates by the mean, so per-sample values are in its units
    aggregations: dict[str, str]  # key -> aggregation name
    lower_is_better: list[str] = field(default_factory=list)  # keys whose metric lm-eval ranks smaller-is-better


def aggregate(records: list[dict[str, Any]], spec: dict[str, Any]) -> Aggregated:
    """lm-eval's aggregate of every "metric,filter" key the records hold, in the task's declared order."""
    from lm_eval.api.metrics import acc_all, acc_all_stderr, mean, mean_stderr

    closed_form: dict[Any, Callable[[list[Any]], float]] = {mean: mean_stderr, acc_all: acc_all_stderr}
    declared = task_metrics(spec)
    by_name = {m.name: m for m in declared}
    filters = filter_names(spec)
    keys = list(dict.fromkeys(k for r in records for k in r if "," in k and not k.startswith("lm_eval")))

    def order(key: str) -> tuple[int, int, str]:
        metric, _, flt = key.partition(",")
        m_pos = next((i for i, m in enumerate(declared) if m.name == metric), len(declared))
        f_pos = filters.index(flt) if flt in filters else len(filters)
        return m_pos, f_pos, key

    keys.sort(key=order)
    metrics: dict[str, float | int | None] = {}
    names: dict[str, str] = {}
    for key in keys:
        metric = key.partition(",")[0]
        fn = by_name[metric].aggregation if metric in by_name else mean
        values = [r[key] for r in records if key in r and r[key] is not None]
        names[key] = by_name[metric].aggregation_name if metric in by_name else "mean"
        metrics[key] = _number(fn(values)) if values else None
        stderr = closed_form.get(fn)
        if stderr is not None and len(values) > 1:
            metrics[f"{key}_stderr"] = _number(stderr(values))
    headline = next((k for k in keys if metrics.get(k) is not None), keys[0] if keys else "")
    head_fn = by_name[headline.partition(",")[0]].aggregation if headline.partition(",")[0] in by_name else mean
    lower = [k for k in keys if k.partition(",")[0] in by_name and by_name[k.partition(",")[0]].higher_is_better is False]
    return Aggregated(metrics, headline, head_fn is mean, names, lower)


def json_value(value: Any) -> Any:
    """`json.dumps` default for logged samples: numpy scalars as numbers (an argmax is a numpy int, and the
    `f1`/`mcc` aggregations compare it with the gold index), anything else as its text."""
    to_list = getattr(value, "tolist", None)  # numpy scalars and arrays
    return to_list() if callable(to_list) else str(value)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
