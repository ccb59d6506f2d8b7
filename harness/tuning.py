"""Tuning under a matched search budget: each tuned method's trials, and the checks `validate` runs on them.

A method entry's `search:` maps `optimizer.<field>` or `params.<name>` to the values to try. Its grid is the
Cartesian product in the order written; every tuned method gets exactly `tuning.trials` trials: a larger
grid is subsampled with the fixed `tuning.seed` (the same for every method; `subsample` tries every value of
every key where the trials allow), a smaller one is refused, so
no method silently gets a smaller search. A trial is the method entry with one grid point applied: it
trains under the experiment's budget with the first training seed (harness.stages.tuning), so the
selected trial IS the test row of that seed (same inputs, same artifact).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from harness.config import (
    OPTIMIZER_FIELDS,
    Budget,
    Experiment,
    MethodSpec,
    TuningConfig,
    format_validation_error,
)
from harness.errors import ConfigError


@dataclass(frozen=True)
class Trial:
    index: int  # 0-based, in grid order
    settings: dict[str, Any]  # {"optimizer.learning_rate": 1e-6, "params.beta": 0.1}
    spec: MethodSpec  # the method entry with these settings applied (no `search`)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items())


def grid(search: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    keys = list(search)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(search[k] for k in keys))]


def apply_settings(spec: MethodSpec, settings: dict[str, Any]) -> MethodSpec:
    """The method entry with one grid point applied (validated like a written entry)."""
    params, optimizer = dict(spec.params), spec.optimizer.model_dump()
    for key, value in settings.items():
        group, _, name = key.partition(".")
        (params if group == "params" else optimizer)[name] = value
    data = {**spec.model_dump(exclude={"search"}), "params": params, "optimizer": optimizer, "search": {}}
    try:
        return MethodSpec.model_validate(data)
    except ValidationError as exc:
        where = f"methods ({spec.row_name}).search ({', '.join(f'{k}={v}' for k, v in settings.items())})"
        raise ConfigError(format_validation_error(exc, where, MethodSpec)) from None


def trials_for(spec: MethodSpec, tuning: TuningConfig) -> list[Trial]:
    points = grid(spec.search)
    if len(points) < tuning.trials:
        raise ConfigError(f"methods ({spec.row_name}).search: {len(points)} grid points, fewer than tuning.trials "
                          f"({tuning.trials}); every tuned method gets the same number of trials: add values or "
                          f"lower tuning.trials")
    if len(points) > tuning.trials:
        points = subsample(points, tuning.trials, tuning.seed)
    return [Trial(i, point, apply_settings(spec, point)) for i, point in enumerate(points)]


def subsample(points: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """k grid points, seeded, that try as many values of every key as k allows: each pick is the point (in a
    seeded shuffle of the grid) adding the most (key, value) pairs not yet tried. A plain random sample of
    4 from a 4 x 2 grid can miss a learning rate altogether; this one tries all four. Grid order kept."""
    order = list(range(len(points)))
    random.Random(seed).shuffle(order)
    tried: set[tuple[str, str]] = set()
    chosen: list[int] = []
    for _ in range(k):
        def new_values(i: int) -> int:
            return sum((key, repr(v)) not in tried for key, v in points[i].items())
        best = max((i for i in order if i not in chosen), key=new_values)  # max keeps the first of equals
        chosen.append(best)
        tried.update((key, repr(v)) for key, v in points[best].items())
    return [points[i] for i in sorted(chosen)]


def tuned_methods(exp: Experiment) -> list[MethodSpec]:
    return [spec for spec in exp.methods if spec.search] if exp.tuning is not None else []


def validate_tuning(exp: Experiment, source: str) -> None:
    """Every bad search or selection setting, found before any work (one line each, the first raised)."""
    from harness.registry import METHODS

    for i, spec in enumerate(exp.methods):
        if not spec.search:
            continue
        where = f"{source}: methods.{i} ({spec.row_name}).search"
        if exp.tuning is None:
            raise ConfigError(f"{where}: a search needs the experiment's `tuning:` section (trials, select_on)")
        params_model = getattr(METHODS.get(spec.name), "Params", None)
        for key, values in spec.search.items():
            group, _, name = key.partition(".")
            known = (OPTIMIZER_FIELDS if group == "optimizer"
                     else tuple(params_model.model_fields) if group == "params" and params_model else ())
            if name not in known:
                allowed = [f"optimizer.{f}" for f in OPTIMIZER_FIELDS] + [
                    f"params.{f}" for f in (params_model.model_fields if params_model else ())]
                raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
            if not values:
                raise ConfigError(f"{where}.{key}: no values; list the values to try")
        try:
            trials = trials_for(spec, exp.tuning)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        base = METHODS.get(spec.name)(spec.params)
        for trial in trials:
            _validate_trial(exp.budget, trial, params_model, f"{where} ({trial.describe()})")
            _same_data(base, METHODS.get(spec.name)(trial.spec.params), f"{where} ({trial.describe()})")
    if exp.tuning is not None:
        validate_select_on(exp, source)


def _validate_trial(budget: Budget, trial: Trial, params_model: Any, where: str) -> None:
    if params_model is not None:
        try:
            params_model.model_validate(trial.spec.params)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where, params_model)) from None
    try:
        Budget.model_validate({**budget.model_dump(), **trial.spec.optimizer.overrides()})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, Budget)) from None


def _same_data(base: Any, trial: Any, where: str) -> None:
    """Trials vary how a method learns from the run's shared data, never the data: the signals it reads and
    its prompt filter (which decides the shared trainset) must be the entry's own."""
    if base.signals_needed() != trial.signals_needed() or base.filter_identity() != trial.filter_identity():
        raise ConfigError(f"{where}: these settings change the signals or the prompt filter the method trains on; "
                          f"every trial must train on the run's one trainset: search other parameters, or add a "
                          f"second method entry (with a `label`) for this setting")


def validate_select_on(exp: Experiment, source: str) -> None:
    """The benchmark exists, has a dev split, and records the metric."""
    from harness.registry import BENCHMARKS

    assert exp.tuning is not None
    select = exp.tuning.select_on
    where = f"{source}: tuning.select_on"
    try:
        cls = BENCHMARKS.get(select.benchmark)
    except Exception as exc:
        raise ConfigError(f"{where}.benchmark: {exc}") from None
    if not cls.has_dev_split:
        with_dev = sorted(name for name in BENCHMARKS.names() if BENCHMARKS.get(name).has_dev_split)
        raise ConfigError(f"{where}.benchmark: {select.benchmark!r} has no dev split (items disjoint from training "
                          f"and from its test items); select on one that has: {', '.join(with_dev)}")
    metrics = cls.metric_names()
    if select.metric is not None and metrics and select.metric not in metrics:
        raise ConfigError(f"{where}.metric: {select.benchmark} records no metric {select.metric!r}; "
                          f"choose one of {', '.join(metrics)}")


def select_metric(exp: Experiment) -> tuple[str, bool]:
    """(metric, higher_is_better) the selection compares trials on."""
    from harness.registry import BENCHMARKS

    assert exp.tuning is not None
    cls = BENCHMARKS.get(exp.tuning.select_on.benchmark)
    metric = exp.tuning.select_on.metric or cls.headline
    column = next((c for c in cls.columns() if c.metric == metric), None)
    return metric, column.higher_is_better if column is not None else True
