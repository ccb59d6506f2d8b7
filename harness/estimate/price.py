"""Price a plan: per stage the tokens generated, scored and trained, FLOPs and accelerator hours.

`estimate_plan(plan, ctx, "a800")` walks the plan's stages (harness.stages.plan) and prices each from the
experiment, the model shapes (harness.estimate.shapes) and the lengths (harness.estimate.lengths); nothing
is loaded but configs, tokenizers that are on disk, and data that `validate` reads too. Hours are device
hours: a stage that runs data-parallel on k devices takes hours / k of wall time (perfect scaling assumed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.estimate.hardware import Accelerator, accelerator
from harness.estimate.lengths import Lengths, Tokens
from harness.estimate.memory_plan import MemoryPlan, Setup, StageMemory
from harness.estimate.shapes import ModelShape, shape_of
from harness.estimate.work import (
    LOCAL_JUDGES,
    Shapes,
    StageWork,
    answers_work,
    judgements_work,
    samples_work,
    signal_work,
    train_work,
)

GRADIENT_CHECKPOINTING_RECOMPUTE = 4.0 / 3.0  # one more forward (2N) on top of forward + backward (6N)


@dataclass
class StageEstimate:
    kind: str
    label: str
    done: bool
    work: StageWork
    flops: float
    compute_s: float
    overhead_s: float
    memory: StageMemory | None = None  # peak device memory (harness.estimate.memory_plan)

    @property
    def generated(self) -> float:
        return self.work.tokens("decode")

    @property
    def scored(self) -> float:
        return self.work.tokens("forward")

    @property
    def trained(self) -> float:
        return self.work.tokens("train")

    @property
    def seconds(self) -> float:
        return self.compute_s + self.overhead_s

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass
class PlanEstimate:
    accelerator: Accelerator
    stages: list[StageEstimate]
    assumptions: list[str] = field(default_factory=list)

    def total(self, attribute: str, kind: str | None = None, pending_only: bool = False) -> float:
        return sum(float(getattr(s, attribute)) for s in self.stages
                   if (kind is None or s.kind == kind) and not (pending_only and s.done))

    @property
    def judge_calls(self) -> int:
        return sum(s.work.judge_calls for s in self.stages)

    def stage(self, kind: str, label: str) -> StageEstimate:
        return next(s for s in self.stages if s.kind == kind and s.label == label)


def price(work: StageWork, kind: str, acc: Accelerator, recompute: bool) -> tuple[float, float, float]:
    """(FLOPs, compute seconds, overhead seconds) of one stage's work on `acc`."""
    flops = compute = 0.0
    for w in work.works:
        flops += w.flops
        factor = GRADIENT_CHECKPOINTING_RECOMPUTE if (w.kind == "train" and recompute) else 1.0
        compute += w.flops * factor / (acc.peak_flops * acc.mfu(w.kind, w.backend))
    if not work.works:  # reading data, filtering, calling an API judge: no accelerator time
        return 0.0, 0.0, 0.0
    overhead = acc.overhead_s.get(kind, 0.0) + sum(acc.engine_start(work.engine_backend, params)
                                                   for params in work.engine_params)
    return flops, compute, overhead


class _Judges:
    """Shapes and tokenizers of local judges, built once per judge model."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[ModelShape, Tokens]] = {}

    def get(self, judge: Any) -> tuple[ModelShape | None, Tokens | None]:
        if judge is None or judge.backend not in LOCAL_JUDGES:
            return None, None
        if judge.model not in self.cache:
            from harness.config import ModelSpec

            spec = ModelSpec(model=judge.model)
            self.cache[judge.model] = (shape_of(spec), Tokens(spec))
        return self.cache[judge.model]


def stage_work(step: Any, s: Shapes, ctx: Any, first_row: Any, judges: _Judges) -> StageWork:
    """The work of one plan step (harness.stages: its kind and what it holds)."""
    if step.kind == "samples":
        return samples_work(s)
    if step.kind == "signal":
        return signal_work(s, step.source.name)
    if step.kind == "train":
        return train_work(s, step.spec.name, step.method.params)
    if step.kind in ("answers", "judgements"):
        answers = step if step.kind == "answers" else step.answers  # a tuning trial's: the dev split
        spec, bench = answers.bench_spec, answers.benchmark()
        if step.kind == "answers" and getattr(step, "file", None) is not None:
            return StageWork()  # an external row's answers read from a file: nothing generated
        if step.kind == "answers":
            return answers_work(s, step.row.kind, bench, spec, step.siblings[0] is step, step.row is first_row)
        from harness.judges.choice import judge_spec_for

        judge = judge_spec_for(ctx.exp.judge, spec, bench) if bench.needs_judge else None
        return judgements_work(s, bench, spec, judge, *judges.get(judge))
    return StageWork()  # prompts, trainset: reading and filtering, no model work


def estimate_plan(plan: Any, ctx: Any, on: str) -> PlanEstimate:
    """Price every stage of `plan` (a harness.stages.plan.Plan of `ctx`) on accelerator `on`."""
    acc = accelerator(on)
    exp = ctx.exp
    lengths = Lengths(exp)
    shapes = Shapes(exp, lengths, shape_of(exp.student), shape_of(exp.teacher))
    judges = _Judges()
    memory = MemoryPlan(shapes, Setup.of(exp, acc.is_gpu), acc.memory_bytes)
    first_row = plan.rows[0] if plan.rows else None
    stages = []
    seen: set[str] = set()
    for step in plan.steps:
        if step.artifact.key in seen:  # a tuned method's first-seed row is one of its trials: paid once
            continue
        seen.add(step.artifact.key)
        work = stage_work(step, shapes, ctx, first_row, judges)
        flops, compute, overhead = price(work, step.kind, acc, exp.budget.gradient_checkpointing)
        stages.append(StageEstimate(step.kind, step.label, step.done, work, flops, compute, overhead,
                                    memory.stage(step)))
    return PlanEstimate(acc, stages, assumptions(acc, shapes, lengths))


def assumptions(acc: Accelerator, shapes: Shapes, lengths: Lengths) -> list[str]:
    from harness.estimate.lengths import ASSUMED_RESPONSE_TOKENS

    exp = shapes.exp
    return [
        acc.assumptions(),
        f"models: student {shapes.student.params / 1e9:.3g}B params ({shapes.student.source}); teacher "
        f"{shapes.teacher.params / 1e9:.3g}B ({shapes.teacher.source})",
        "FLOPs: 2N per token forward/decode, 6N trained, plus attention 2 x layers x context x width per token "
        "forward (x3 trained)" + ("; gradient checkpointing: time counts 8N per trained token"
                                  if exp.budget.gradient_checkpointing else ""),
        lengths.describe_prompts() + f" (mean student prompt {shapes.prompt['student']:.0f} tokens, teacher "
        f"{shapes.prompt['teacher']:.0f})",
        f"responses: min(cap, {ASSUMED_RESPONSE_TOKENS}) tokens each (samples cap {exp.sampling.max_new_tokens}); "
        f"every sampled prompt kept (an upper bound); training shares prompts: "
        f"{'yes' if shapes.student.shares_prompts else 'no (sliding-window attention)'}",
        "benchmarks: " + "; ".join(f"{name} {items.items} items x {items.turns} turn(s) ({items.source})"
                                   for name, items in lengths.benchmarks().items()),
        "hours are device hours (wall time = hours / devices at perfect scaling); overheads per stage "
        "(model loads, engine starts, saving) included",
    ]
