"""The train stage: one run per (method, seed), all under the experiment's one budget."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import MethodSpec
from harness.methods.base import PromptGroup
from harness.models.handles import ModelHandle
from harness.stages import data as data_stages
from harness.stages.base import Stage
from harness.stages.signals_stage import SignalStage, load_signals
from harness.stages.trainset import TrainsetStage

if TYPE_CHECKING:
    from harness.stages.context import RunContext

# What a train artifact holds, in its key: artifacts stored before the student directory was complete (weights
# and config only) lack the tokenizer and generation config, so they are not found and are trained again.
STORED_AS = "hf_model_dir"  # harness.interop.model_dir


class TrainStage(Stage):
    kind = "train"
    collective = True  # every process of a multi-process launch trains (harness.processes)

    def __init__(self, ctx: RunContext, spec: MethodSpec, seed: int, trainset: TrainsetStage,
                 signals: dict[str, SignalStage]) -> None:
        super().__init__(ctx, f"{spec.row_name}-seed{seed}")
        self.spec, self.seed = spec, seed
        self.method = ctx.method_for(spec)
        # The matched budget with this method's own optimizer settings (a tuning trial's included).
        self.budget = spec.effective_budget(ctx.exp.budget)
        self.trainset = trainset
        self.signals = {name: signals[name] for name in sorted(self.method.signals_needed())}

    @property
    def solo(self) -> bool:
        """Trained by its owner process alone (a tuning trial under a launch), not by every process."""
        return not self.collective and self.ctx.processes.world_size > 1

    def inputs(self) -> dict[str, Any]:
        exp, method = self.ctx.exp, self.method
        # On-policy samples drawn while training come from `sampling.backend` (keys unchanged for hf).
        live = ({"live_sampler": self.ctx.backend_key(exp.sampling.backend)}
                if method.on_policy and exp.sampling.backend != "hf" else {})
        return {"trainset": self.trainset.artifact.key,
                "signals": {name: stage.artifact.key for name, stage in self.signals.items()},
                "method": self.spec.name, "params": method.params.model_dump(mode="json"),
                "budget": self.budget.result_inputs(), "seed": self.seed, "student": self.ctx.student_key,
                "stored_as": STORED_AS, **live, **self._lora_inputs()}

    def _lora_inputs(self) -> dict[str, Any]:
        """A LoRA student's adapter settings (absent for full fine-tuning: those keys stay as they were)."""
        lora = self.ctx.exp.student.lora
        return {} if lora is None else {"lora": lora.model_dump(mode="json")}

    def handle(self) -> ModelHandle:
        """The trained model: the student's architecture with this artifact's weights."""
        return ModelHandle(self.label, self.ctx.exp.student, {"trained": self.artifact.key},
                           weights_dir=self.artifact.path, train_key=self.artifact.key)

    def groups(self) -> list[PromptGroup]:
        """The shared training set (same prompts for every method) with the signals this method reads."""
        groups = data_stages.groups_from(self.trainset.samples.read(), load_signals(self.signals, self.signals))
        keep = self.trainset.prompt_ids()
        return [g for g in groups if g.prompt_id in keep]

    def precompute_accounting(self) -> dict[str, int]:
        """The shared precompute this method relies on, attributed to it in full (the sampling it trains on
        and every signal it reads), so 'matched budget' compares all the work each method needed."""
        totals: dict[str, int] = {}
        arts = [self.trainset.samples.artifact] + [stage.artifact for stage in self.signals.values()]
        for art in arts:
            for key, value in (art.manifest().get("accounting") or {}).items():
                if key.endswith("_params"):  # a model size, not a count of work
                    totals[key] = max(totals.get(key, 0), int(value))
                else:
                    totals[key] = totals.get(key, 0) + int(value)
        return totals

    def run(self, out: Path, stop_after_steps: int | None = None) -> dict[str, Any]:
        from harness.interop.model_dir import complete_model_dir
        from harness.tracking.names import training_run_name
        from harness.training.trainer import train

        ctx, method = self.ctx, self.method
        groups = self.groups()
        models = ctx.models
        # On-policy samples (GKD) come from the configured sampling backend (vllm: an engine following the weights).
        sampler = models.live_sampler(ctx.student, ctx.exp.sampling.backend) if method.on_policy else None
        try:
            student = models.fresh_copy(ctx.student)
            result = train(
                method, groups, student, self.budget, self.seed,
                ctx.store.work_dir(self.artifact), out, logging=ctx.exp.logging,
                precompute_accounting=self.precompute_accounting(),
                teacher_loader=(lambda: models.loaded(ctx.teacher)) if method.on_policy else None,
                generator=sampler, stop_after_steps=stop_after_steps, progress=ctx.progress, solo=self.solo,
                run_name=training_run_name(self.spec.row_name, self.seed, ctx.exp.seeds),
                lora=ctx.exp.student.lora, merge_base=self._unquantized_base,
            )
        finally:
            if sampler is not None:
                sampler.close()
        random.seed()  # leave no global RNG state behind for the next stage
        # The process that stored the weights (the trainer's main process; a solo trial's owner) completes the
        # directory; a run cut short by `stop_after_steps` stored nothing.
        if result.completed and (self.solo or ctx.processes.is_main):
            complete_model_dir(out, student, ctx.exp.student.lora)
        return {"accounting": result.accounting, "method": self.spec.name, "seed": self.seed, "prompts": len(groups)}

    def _unquantized_base(self) -> Any:
        """The student's base without `quantization`: what a QLoRA run's adapters are merged into."""
        from harness.models.sources import load_model

        spec = self.ctx.exp.student.model_copy(update={"quantization": None, "lora": None})
        return load_model(spec).model

    def after_commit(self) -> None:
        """The trained model is stored: its resume checkpoints (~3x the model each) are no longer needed."""
        from harness.training.checkpoint import remove_checkpoints

        if not self.budget.keep_checkpoints:
            remove_checkpoints(self.ctx.store.work_dir(self.artifact))
