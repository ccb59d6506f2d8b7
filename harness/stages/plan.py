"""The plan: every stage of one experiment, in run order, built from the experiment alone.

    prompts -> samples -> signals (each source once, shared) -> trainset -> train (method x seed)
            -> answers (row x benchmark) -> judgements
    external rows (harness.stages.external): a model's answers, or answers read from files -> judgements
    with tuning: trainset -> trials (train + dev answers + dev judgements) -> selection -> the tuned
            method's train (x seed, the selected settings) -> its answers -> judgements

Each stage holds the upstream stages it reads, so keys chain and nothing is looked up by name at run
time. A row's answers come back to back (one engine serves them all), then its judgements; under a launch
of N processes, row i is evaluated by process i mod N. A tuned method's test rows are keyed by the settings
its selection chose, so they are planned once that selection is stored: until then `Plan.awaiting_selection`
names the methods, and the executor plans again after running what it can (harness.pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.stages.base import Stage
from harness.stages.context import RunContext
from harness.stages.data import PromptsStage, SamplesStage
from harness.stages.evaluation import AnswersStage, JudgementsStage, ModelRow, describe_judge
from harness.stages.external import answered_benchmarks, answers_stage, external_rows
from harness.stages.signals_stage import SignalStage, signal_stages
from harness.stages.training import TrainStage
from harness.stages.trainset import TrainsetStage
from harness.stages.tuning import SelectionStage, tuning_stages


@dataclass
class Plan:
    steps: list[Stage]
    rows: list[ModelRow]
    prompts: PromptsStage
    samples: SamplesStage
    signals: dict[str, SignalStage]  # signal name -> the stage computing it
    trainset: TrainsetStage
    judgements: dict[tuple[str, int], JudgementsStage] = field(default_factory=dict)  # (row name|seed, benchmark)
    selections: dict[str, SelectionStage] = field(default_factory=dict)  # tuned method row name -> its selection
    awaiting_selection: list[str] = field(default_factory=list)  # tuned methods whose test rows are not planned yet

    def judged(self, row: ModelRow, index: int) -> JudgementsStage:
        return self.judgements[(f"{row.row}|{row.seed}", index)]

    def evaluates(self, row: ModelRow, index: int) -> bool:
        """Whether the row answers benchmark `index` (an answers-files external row: only where it has a file)."""
        return (f"{row.row}|{row.seed}", index) in self.judgements

    def answers(self, row: ModelRow, index: int) -> AnswersStage:
        return self.judged(row, index).answers


def build_plan(ctx: RunContext, project_selections: bool = False) -> Plan:
    """`project_selections`: plan a tuned method whose selection is not stored yet as if its first trial
    were chosen (every trial costs the same): for pricing the whole plan, never for running it."""
    prompts = PromptsStage(ctx)
    samples = SamplesStage(ctx, prompts)
    signals = signal_stages(ctx, samples)
    trainset = TrainsetStage(ctx, samples, signals)
    steps: list[Stage] = [prompts, samples, *dict.fromkeys(signals.values()), trainset]
    rows = [ModelRow("teacher", "teacher", ctx.teacher), ModelRow("student (untrained)", "student", ctx.student)]
    trial_steps, selections = tuning_stages(ctx, trainset, signals, first_owner=0)
    steps += trial_steps
    awaiting = []
    for spec in ctx.exp.methods:
        selection = selections.get(spec.row_name)
        if selection is not None and not selection.done and not project_selections:
            awaiting.append(spec.row_name)
            continue
        trained = spec if selection is None else (
            selection.selected_spec() if selection.done else selection.trials[0][0].spec)
        for seed in ctx.exp.seeds:
            train = TrainStage(ctx, trained, seed, trainset, signals)
            steps.append(train)
            rows.append(ModelRow(spec.row_name, "method", train.handle(), trained, seed, train))
    rows += external_rows(ctx)
    plan = Plan(steps, rows, prompts, samples, signals, trainset, selections=selections, awaiting_selection=awaiting)
    judges = {b: describe_judge(ctx, b) for b in ctx.benchmark_indices()}
    for position, row in enumerate(rows):
        answers: list[AnswersStage] = []
        for b in answered_benchmarks(ctx, row):
            answers.append(answers_stage(ctx, row, b, answers))
        steps.extend(answers)
        for stage in answers:
            stage.owner = position  # a launch's processes evaluate different rows
            judged = JudgementsStage(ctx, stage, judges[stage.index])
            judged.owner = position
            plan.judgements[(f"{row.row}|{row.seed}", stage.index)] = judged
            steps.append(judged)
    return plan
