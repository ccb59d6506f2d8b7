"""Tuning as stages: per tuned method, its trials (a train stage each + an evaluation of the DEV split) and a
selection stage that reads the trials' dev scores and names the chosen settings.

    trainset -> train (trial k, first seed) -> answers (dev split) -> judgements (dev) -> selection

A trial's train stage has exactly the inputs (and label) of the test row trained with the same settings and
the first seed, so the selected trial is that row's artifact: K trials cost K trainings plus K dev
evaluations, nothing more. The test rows of a tuned method are planned once its selection is stored
(harness.stages.plan); nothing a test benchmark evaluates enters a trial's or the selection's inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.benchmarks.base import Benchmark
from harness.config import BenchmarkSpec, MethodSpec
from harness.stages.base import Stage
from harness.stages.evaluation import AnswersStage, JudgementsStage, ModelRow
from harness.stages.training import TrainStage
from harness.tuning import Trial, apply_settings, select_metric, trials_for

if TYPE_CHECKING:
    from harness.stages.context import RunContext
    from harness.stages.signals_stage import SignalStage
    from harness.stages.trainset import TrainsetStage


class TrialTrainStage(TrainStage):
    """A trial's training: the inputs (and so the artifact) of the test row with its settings and the first
    seed. Under a launch, trial i is trained alone by process i mod N (with its dev evaluation), not
    data-parallel by all: for students that fit one device this keeps every device busy."""

    collective = False


class DevAnswersStage(AnswersStage):
    """A trial's answers to the DEV split of the benchmark tuning selects on."""

    label_suffix = "-dev"

    @property
    def bench_spec(self) -> BenchmarkSpec:
        return self.ctx.dev_spec()

    def benchmark(self) -> Benchmark:
        return self.ctx.dev_benchmark()

    def split_inputs(self) -> dict[str, Any]:
        return {"split": {"name": "dev", "after_test_items": self.ctx.dev_test_items()}}


class SelectionStage(Stage):
    """Reads every trial's dev score and names the selected trial (ties: the first in grid order)."""

    kind = "selection"

    def __init__(self, ctx: RunContext, spec: MethodSpec,
                 trials: Sequence[tuple[Trial, TrainStage, JudgementsStage]]):
        super().__init__(ctx, spec.row_name)
        self.spec, self.trials = spec, trials
        self.metric, self.higher_is_better = select_metric(ctx.exp)

    def inputs(self) -> dict[str, Any]:
        assert self.ctx.exp.tuning is not None
        return {"method": self.spec.row_name, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "trials": [{"settings": t.settings, "dev": judged.artifact.key} for t, _, judged in self.trials]}

    def run(self, out: Path) -> dict[str, Any]:
        from harness.integrity import require_intact
        from harness.processes import wait_for

        for _, train, judged in self.trials:  # under a launch, other processes train and score some trials
            for art in (train.artifact, judged.answers.artifact, judged.artifact):
                wait_for(art)
                require_intact(art)
        records = [self._trial_record(trial, train, judged) for trial, train, judged in self.trials]
        best = pick_best([r["value"] for r in records], self.higher_is_better)
        chosen = records[best]
        scored = sum(isinstance(r["value"], (int, float)) and not math.isnan(r["value"]) for r in records)
        warnings = edge_warnings([r["settings"] for r in records], best) if scored else [
            f"no trial has a dev score for {self.metric}: the first trial was taken, nothing was selected"]
        result = {"method": self.spec.row_name, "metric": self.metric, "higher_is_better": self.higher_is_better,
                  "dev_benchmark": self.ctx.dev_spec().name, "dev_source": records[0]["dev_source"],
                  "trials": records, "selected": best, "selected_settings": chosen["settings"],
                  "warnings": warnings,
                  "search_cost": search_cost(records)}
        (out / "selection.json").write_text(json.dumps(result, indent=2, sort_keys=True))
        return {"selected": best, "selected_settings": chosen["settings"]}

    def _trial_record(self, trial: Trial, train: TrainStage, judged: JudgementsStage) -> dict[str, Any]:
        score, answers_manifest, _ = judged.score()
        value = score.metrics.get(self.metric)
        column = next((c for c in type(judged.answers.benchmark()).columns() if c.metric == self.metric), None)
        stderr = score.metrics.get(column.se_metric) if column is not None and column.se_metric else None
        interval = ([value - 1.96 * stderr, value + 1.96 * stderr]
                    if isinstance(value, (int, float)) and isinstance(stderr, (int, float)) else None)
        accounting = train.artifact.manifest().get("accounting") or {}
        return {"trial": trial.index, "settings": trial.settings, "value": value, "stderr": stderr,
                "ci95": interval, "train_key": train.artifact.key, "dev_items": score.metrics.get("n"),
                "dev_source": answers_manifest.get("source", ""),
                "cost": {"train_student_tokens": _student_tokens(accounting),
                         "train_flops": accounting.get("training_flops"),
                         "train_wall_time_s": accounting.get("wall_time_s"),
                         "dev_generation_tokens": (answers_manifest.get("accounting") or {}).get(
                             "eval_generation_tokens"),
                         "dev_wall_time_s": answers_manifest.get("wall_time_s")}}

    def selection(self) -> dict[str, Any]:
        return json.loads(self.artifact.file("selection.json").read_text())

    def selected_spec(self) -> MethodSpec:
        return apply_settings(self.spec, self.selection()["selected_settings"])


def _student_tokens(accounting: dict[str, Any]) -> int | None:
    parts = [accounting.get(k) for k in ("student_forward_tokens", "student_backward_tokens")]
    return int(sum(p for p in parts if p)) if any(parts) else None


def pick_best(values: list[Any], higher_is_better: bool) -> int:
    """The index of the best numeric value (the first of equals); trials without a value never win."""
    scored = [(v if higher_is_better else -v, -i) for i, v in enumerate(values)
              if isinstance(v, (int, float)) and not math.isnan(v)]
    if not scored:
        return 0
    return -max(scored)[1]


def edge_warnings(settings: list[dict[str, Any]], best: int) -> list[str]:
    """A numeric setting whose selected value is the smallest or largest tried: the optimum may lie beyond."""
    out = []
    for key, chosen in settings[best].items():
        tried = sorted({s[key] for s in settings if isinstance(s[key], (int, float)) and not isinstance(s[key], bool)})
        if len(tried) < 2 or chosen not in tried:
            continue
        if chosen in (tried[0], tried[-1]):
            edge = "smallest" if chosen == tried[0] else "largest"
            out.append(f"{key}={chosen} is the {edge} value tried: widen the range")
    return out


def search_cost(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the search cost in all: the sum over trials (a missing figure is left out of its sum)."""
    totals: dict[str, Any] = {"trials": len(records)}
    for key in ("train_student_tokens", "train_flops", "train_wall_time_s", "dev_generation_tokens",
                "dev_wall_time_s"):
        values = [r["cost"][key] for r in records if isinstance(r["cost"].get(key), (int, float))]
        totals[key] = sum(values) if values else None
    return totals


def tuning_stages(ctx: RunContext, trainset: TrainsetStage, signals: dict[str, SignalStage],
                  first_owner: int) -> tuple[list[Stage], dict[str, SelectionStage]]:
    """Every tuned method's trials, their dev evaluations and its selection, in run order. Trial i (counted
    over all tuned methods) is evaluated by process `first_owner + i` mod N."""
    steps: list[Stage] = []
    selections: dict[str, SelectionStage] = {}
    if ctx.exp.tuning is None:
        return steps, selections
    position = first_owner
    for spec in ctx.exp.methods:
        if not spec.search:
            continue
        trials = []
        for trial in trials_for(spec, ctx.exp.tuning):
            train = TrialTrainStage(ctx, trial.spec, ctx.exp.seeds[0], trainset, signals)
            train.detail = f"trial {trial.index + 1}/{ctx.exp.tuning.trials}: {trial.describe()}"
            train.owner = position
            row = ModelRow(f"{spec.row_name} trial {trial.index + 1}", "trial", train.handle(), trial.spec,
                           ctx.exp.seeds[0], train)
            answers = DevAnswersStage(ctx, row, -1, [])
            answers.siblings = [answers]
            judged = JudgementsStage(ctx, answers, "dev split")
            answers.owner = judged.owner = position
            position += 1
            steps += [train, answers, judged]
            trials.append((trial, train, judged))
        selection = SelectionStage(ctx, spec, trials)
        steps.append(selection)
        selections[spec.row_name] = selection
    return steps, selections
