"""The built-in signal sources (registered in pyproject's `harness.signals` group, as a plugin's would be).

    student_logprobs  -> student_avg_logprob, reference_logprob   (one pass of the initial student, run as the
                                                                   trainer runs it at step 0: signals.policy)
    teacher_logprobs  -> teacher_avg_logprob
    mcq_preference    -> mcq_preference
    teacher_topk      -> teacher_topk
    teacher_samples   -> teacher_samples                          (the teacher's own answers, for SeqKD)

The computations themselves are the pure functions of `harness.signals`; these classes say what each
depends on and how its values are stored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

from harness.methods.base import Signal
from harness.signals.base import SignalContext, SignalSource, Who
from harness.store import write_json_atomic


def _lengths(ctx: SignalContext) -> dict[str, Any]:
    budget = ctx.exp.budget
    # The truncation rule only when not the default: keys made before the option existed stay valid.
    rule = {} if budget.truncation == "per_response" else {"truncation": budget.truncation}
    return {"max_length": budget.max_length, "max_prompt_length": budget.max_prompt_length, **rule}


def _cut_as(ctx: SignalContext, who: Who) -> dict[str, Any]:
    """A teacher signal is cut as training cuts the STUDENT's inputs (the teacher keeps its whole context:
    `signals.scoring_inputs`), so the student's identity is one of its inputs."""
    return {"cut_as": ctx.model_key("student")} if who == "teacher" else {}


def _read_values(path: Path) -> dict[str, Any]:
    return json.loads((path / "values.json").read_text())


class _LogProbs(SignalSource):
    """Mean and SUM log-probs of every sampled response under one model (one forward pass)."""

    def inputs(self, ctx: SignalContext) -> dict[str, Any]:
        return {"model": ctx.model_key(self.model), **_lengths(ctx), **_cut_as(ctx, self.model)}

    def compute(self, ctx: SignalContext, out: Path) -> dict[str, Any]:
        from harness.signals.logprobs import sequence_scores

        budget = ctx.exp.budget
        cut_as = ctx.model("student").formatter if self.model == "teacher" else None
        scores = sequence_scores(ctx.model(self.model), ctx.groups(), batch_size=ctx.exp.signals.batch_size,
                                 max_length=budget.max_length, max_prompt_length=budget.max_prompt_length,
                                 truncation=budget.truncation, cut_as=cut_as)
        write_json_atomic(out / "values.json", {"mean": scores.mean, "sum": scores.sum})
        return {"accounting": {f"{self.model}_forward_tokens": scores.forward_tokens}}

    def load(self, signal: str, path: Path) -> list[Any]:
        return _read_values(path)["sum" if signal == Signal.REFERENCE_LOGPROB else "mean"]


class StudentLogProbs(_LogProbs):
    """The initial student's mean log-probs, and DPO's reference (the initial student's SUM log-probs),
    scored as the trainer runs the student at step 0 (its precision path and packers: signals.policy)."""

    name: ClassVar[str] = "student_logprobs"
    provides: ClassVar[tuple[str, ...]] = (Signal.STUDENT_AVG_LOGPROB, Signal.REFERENCE_LOGPROB)
    model: ClassVar[Who] = "student"

    def _precision(self, ctx: SignalContext) -> Any:
        from harness.training.precision import policy_precision

        return policy_precision(ctx.exp.budget.mixed_precision, ctx.model_key("student").get("dtype"),
                                lora=ctx.exp.student.lora is not None)

    def inputs(self, ctx: SignalContext) -> dict[str, Any]:
        return {**super().inputs(ctx), "precision": self._precision(ctx).key()}

    def compute(self, ctx: SignalContext, out: Path) -> dict[str, Any]:
        from harness.signals.policy import policy_sequence_scores

        budget = ctx.exp.budget
        scores = policy_sequence_scores(ctx.model("student"), ctx.groups(), self._precision(ctx),
                                        batch_size=ctx.exp.signals.batch_size, max_length=budget.max_length,
                                        max_prompt_length=budget.max_prompt_length, truncation=budget.truncation)
        write_json_atomic(out / "values.json", {"mean": scores.mean, "sum": scores.sum})
        return {"accounting": {"student_forward_tokens": scores.forward_tokens}}


class TeacherLogProbs(_LogProbs):
    """The teacher's mean log-probs (in its own context): PAD's length-normalised reward."""

    name: ClassVar[str] = "teacher_logprobs"
    provides: ClassVar[tuple[str, ...]] = (Signal.TEACHER_AVG_LOGPROB,)


class MCQPreference(SignalSource):
    """The teacher's pairwise preferences, asked as a multiple-choice question (`signals.mcq` rule)."""

    name: ClassVar[str] = "mcq_preference"
    provides: ClassVar[tuple[str, ...]] = (Signal.MCQ_PREFERENCE,)

    def inputs(self, ctx: SignalContext) -> dict[str, Any]:
        from harness.signals.mcq import RELEASED_MCQ_RESPONSE_TOKENS

        rule = ctx.exp.signals.mcq
        cut = {"response_tokens": RELEASED_MCQ_RESPONSE_TOKENS} if rule == "released" else {}  # how responses are cut
        return {"model": ctx.model_key("teacher"), "rule": rule, "template": ctx.exp.signals.mcq_template, **cut}

    def compute(self, ctx: SignalContext, out: Path) -> dict[str, Any]:
        from harness.signals.mcq import mcq_preference

        cfg = ctx.exp.signals
        result = mcq_preference(ctx.model("teacher"), ctx.groups(), batch_size=cfg.batch_size,
                                template=cfg.mcq_template, rule=cfg.mcq)
        write_json_atomic(out / "values.json", {"preference": result.values})
        return {"accounting": {"teacher_forward_tokens": result.forward_tokens}}

    def load(self, signal: str, path: Path) -> list[Any]:
        return _read_values(path)["preference"]


class TeacherTopK(SignalSource):
    """The teacher's top-k next-token log-probs at every response token (token-level KD)."""

    name: ClassVar[str] = "teacher_topk"
    provides: ClassVar[tuple[str, ...]] = (Signal.TEACHER_TOPK,)

    def inputs(self, ctx: SignalContext) -> dict[str, Any]:
        return {"model": ctx.model_key("teacher"), "k": ctx.exp.signals.topk, **_lengths(ctx),
                **_cut_as(ctx, "teacher")}

    def compute(self, ctx: SignalContext, out: Path) -> dict[str, Any]:
        from harness.signals.topk import save_topk, teacher_topk

        exp = ctx.exp
        cut_as = ctx.model("student").formatter  # first: loading the student may park an `offload` teacher
        result = teacher_topk(ctx.model("teacher"), ctx.groups(), k=exp.signals.topk, batch_size=exp.signals.batch_size,
                              max_length=exp.budget.max_length, max_prompt_length=exp.budget.max_prompt_length,
                              truncation=exp.budget.truncation, cut_as=cut_as)
        save_topk(out / "topk.safetensors", result.values)
        return {"accounting": {"teacher_forward_tokens": result.forward_tokens}}

    def merge(self, parts: list[Path], out: Path) -> None:
        from harness.signals.topk import load_topk, save_topk

        if len(parts) == 1:
            shutil.copyfile(parts[0] / "topk.safetensors", out / "topk.safetensors")
            return
        save_topk(out / "topk.safetensors", [value for part in parts for value in load_topk(part / "topk.safetensors")])

    def load(self, signal: str, path: Path) -> list[Any]:
        from harness.signals.topk import load_topk

        return load_topk(path / "topk.safetensors")


class TeacherSamples(SignalSource):
    """The teacher's own answers to the run's prompts (SeqKD's data), through `sampling.backend`."""

    name: ClassVar[str] = "teacher_samples"
    provides: ClassVar[tuple[str, ...]] = (Signal.TEACHER_SAMPLES,)
    reads_samples: ClassVar[bool] = False

    def inputs(self, ctx: SignalContext) -> dict[str, Any]:
        return {"model": ctx.model_key("teacher"), "prompts": ctx.prompts_key, "sampling": ctx.exp.sampling}

    def compute(self, ctx: SignalContext, out: Path) -> dict[str, Any]:
        from harness.signals.teacher_generation import teacher_samples

        generator = ctx.generator("teacher")  # the configured sampling backend (vLLM where asked)
        result = teacher_samples(generator.loaded, ctx.prompts(), ctx.exp.sampling, generator=generator)
        write_json_atomic(out / "values.json", {"samples": result.values})
        flags = [done for v in result.values for done in v["finished"]]
        return {"accounting": {"teacher_generation_tokens": result.generated_tokens},
                "unfinished": {"kept": flags.count(False), "of": len(flags)}}

    def load(self, signal: str, path: Path) -> dict[str, Any]:
        # Keyed by prompt id: the teacher answered every prompt, the samples kept only some.
        return {rec["prompt_id"]: {"responses": rec["responses"], "finished": rec.get("finished")}
                for rec in _read_values(path)["samples"]}
