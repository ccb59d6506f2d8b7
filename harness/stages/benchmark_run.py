"""The run as a benchmark that reads it sees it (`harness.benchmarks.base.RunContext`): the experiment's
prompt source, its teacher and untrained student, and a cache for work every row shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.models.base import LoadedModel

if TYPE_CHECKING:
    from harness.models.scoring import Scorer
    from harness.stages.context import RunContext


class BenchmarkRun:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.batch_size = ctx.exp.signals.batch_size
        self.generation_batch_size = ctx.exp.sampling.batch_size

    def held_out_prompts(self, n: int, skip: int = 0) -> tuple[list[dict[str, Any]], str]:
        from harness.prompts import load_held_out

        held = load_held_out(self.ctx.exp.prompts, n, skip=skip, drawn=self._drawn())
        return held.prompts, held.source

    def _drawn(self) -> int | None:
        """How far training drew into the prompt source (`prompts.count_after_filters`, once sampled)."""
        if not self.ctx.exp.prompts.count_after_filters:
            return None
        from harness.stages.data import PromptsStage, SamplesStage

        return SamplesStage(self.ctx, PromptsStage(self.ctx)).drawn()

    def teacher(self) -> LoadedModel:
        return self.ctx.models.loaded(self.ctx.teacher)

    def teacher_scorer(self) -> Scorer:
        # Rows are evaluated one after another: one scorer, remembering prompt passes, for the whole run.
        return self.ctx.models.scorer(self.ctx.teacher, batch_size=self.batch_size, remember_prompts=8)

    def student(self) -> LoadedModel:
        return self.ctx.models.loaded(self.ctx.student)

    def cached(self, name: str, inputs: dict[str, Any], compute: Callable[[], Any]) -> Any:
        store = self.ctx.store
        art = store.artifact("shared", name, {**inputs, "teacher": self.ctx.teacher_key,
                                              "student": self.ctx.student_key})
        if art.done and (problem := art.verify()) is not None:
            store.set_aside(art, problem)  # damaged: rebuilt below, never used
        if not art.done:
            from harness.store import write_json_atomic

            with store.writing(art) as out:
                write_json_atomic(out / "values.json", compute())
        return json.loads(art.file("values.json").read_text())
