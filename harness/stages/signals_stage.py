"""Signal stages: each shared signal computed ONCE per (model, samples), cached, shared by every method.

Several signal names come out of one computation (one scoring pass of the initial student gives both
its mean log-probs and the reference SUM log-probs DPO needs), so signals are grouped into artifacts:

    teacher_logprobs  -> teacher_avg_logprob
    student_logprobs  -> student_avg_logprob, reference_logprob
    mcq_preference    -> mcq_preference
    teacher_topk      -> teacher_topk
    teacher_samples   -> teacher_samples
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import Experiment
from harness.methods.base import Signal
from harness.stages import data as data_stages
from harness.store import write_json_atomic

if TYPE_CHECKING:
    from harness.pipeline import Pipeline

SIGNAL_ARTIFACT = {
    Signal.TEACHER_AVG_LOGPROB: "teacher_logprobs",
    Signal.STUDENT_AVG_LOGPROB: "student_logprobs",
    Signal.REFERENCE_LOGPROB: "student_logprobs",
    Signal.MCQ_PREFERENCE: "mcq_preference",
    Signal.TEACHER_TOPK: "teacher_topk",
    Signal.TEACHER_SAMPLES: "teacher_samples",
}
ARTIFACT_ORDER = ["student_logprobs", "teacher_logprobs", "mcq_preference", "teacher_topk", "teacher_samples"]


def signal_inputs(artifact_name: str, exp: Experiment, teacher_key: dict[str, Any], student_key: dict[str, Any],
                  prompts_key: str) -> dict[str, Any]:
    """Exactly what each signal artifact depends on (beyond the samples)."""
    budget = {"max_length": exp.budget.max_length, "max_prompt_length": exp.budget.max_prompt_length}
    if artifact_name == "student_logprobs":
        return {"model": student_key, **budget}
    if artifact_name == "teacher_logprobs":
        return {"model": teacher_key, **budget}
    if artifact_name == "mcq_preference":
        return {"model": teacher_key, "rule": exp.signals.mcq, "template": exp.signals.mcq_template}
    if artifact_name == "teacher_topk":
        return {"model": teacher_key, "k": exp.signals.topk, **budget}
    if artifact_name == "teacher_samples":
        # SeqKD's own data: the teacher answers the same prompts (not dependent on the student's samples).
        return {"model": teacher_key, "prompts": prompts_key, "sampling": exp.sampling}
    raise KeyError(artifact_name)


def _groups(pipe: Pipeline) -> list[Any]:
    return data_stages.groups_from(data_stages.read_samples(pipe.samples_artifact().path), {})


def _params(loaded: Any) -> int:
    return int(sum(p.numel() for p in loaded.model.parameters()))


def run_signal(pipe: Pipeline, artifact_name: str, out: Path) -> dict[str, Any]:
    """Compute one signal artifact; its manifest's `accounting` is what the precompute cost every method
    that reads it (the model size rides along so FLOPs can be estimated)."""
    manifest = _run_signal(pipe, artifact_name, out)
    who = "student" if artifact_name == "student_logprobs" else "teacher"
    loaded = pipe.student() if who == "student" else pipe.teacher()
    manifest["accounting"][f"{who}_params"] = _params(loaded)
    return manifest


def _run_signal(pipe: Pipeline, artifact_name: str, out: Path) -> dict[str, Any]:
    from harness import signals

    exp = pipe.exp
    groups = _groups(pipe)
    max_length, max_prompt = exp.budget.max_length, exp.budget.max_prompt_length
    if artifact_name in ("teacher_logprobs", "student_logprobs"):
        who = "teacher" if artifact_name == "teacher_logprobs" else "student"
        loaded = pipe.teacher() if who == "teacher" else pipe.student()
        scores = signals.sequence_scores(loaded, groups, batch_size=exp.signals.batch_size,
                                         max_length=max_length, max_prompt_length=max_prompt)
        write_json_atomic(out / "values.json", {"mean": scores.mean, "sum": scores.sum})
        return {"accounting": {f"{who}_forward_tokens": scores.forward_tokens}}
    if artifact_name == "mcq_preference":
        result = signals.mcq_preference(pipe.teacher(), groups, batch_size=exp.signals.batch_size,
                                        template=exp.signals.mcq_template, rule=exp.signals.mcq)
        write_json_atomic(out / "values.json", {"preference": result.values})
        return {"accounting": {"teacher_forward_tokens": result.forward_tokens}}
    if artifact_name == "teacher_topk":
        result = signals.teacher_topk(pipe.teacher(), groups, k=exp.signals.topk, batch_size=exp.signals.batch_size,
                                      max_length=max_length, max_prompt_length=max_prompt)
        signals.save_topk(out / "topk.safetensors", result.values)
        return {"accounting": {"teacher_forward_tokens": result.forward_tokens}}
    if artifact_name == "teacher_samples":
        prompts = data_stages.read_prompts(pipe.prompts_artifact().path)
        # The configured sampling backend, as for the student's samples (vLLM where asked).
        generator = pipe.sampling_generator("teacher")
        try:
            result = signals.teacher_samples(generator.loaded, prompts, exp.sampling, generator=generator)
        finally:
            generator.close()
        write_json_atomic(out / "values.json", {"samples": result.values})
        flags = [done for v in result.values for done in v["finished"]]
        return {"accounting": {"teacher_generation_tokens": result.generated_tokens},
                "unfinished": {"kept": flags.count(False), "of": len(flags)}}
    raise KeyError(artifact_name)


def load_signal(name: str, path: Path) -> list[Any] | dict[str, Any]:
    """Per-prompt values of one signal, aligned with the samples' order."""
    if name == Signal.TEACHER_TOPK:
        from harness import signals

        return signals.load_topk(path / "topk.safetensors")
    values = json.loads((path / "values.json").read_text())
    if name in (Signal.TEACHER_AVG_LOGPROB, Signal.STUDENT_AVG_LOGPROB):
        return values["mean"]
    if name == Signal.REFERENCE_LOGPROB:
        return values["sum"]
    if name == Signal.MCQ_PREFERENCE:
        return values["preference"]
    if name == Signal.TEACHER_SAMPLES:
        # Keyed by prompt id: the teacher answered every prompt, the samples kept only some.
        return {rec["prompt_id"]: {"responses": rec["responses"], "finished": rec.get("finished")}
                for rec in values["samples"]}
    raise KeyError(name)


def run_trainset(pipe: Pipeline, out: Path) -> dict[str, Any]:
    names = [n for n in pipe.signals_needed() if n != Signal.TEACHER_SAMPLES]
    samples = data_stages.read_samples(pipe.samples_artifact().path)
    sig = {n: load_signal(n, pipe.signal_artifact(n).path) for n in names}
    groups = data_stages.groups_from(samples, sig)
    keeps = data_stages.filter_keeps(pipe.methods, groups)
    kept = data_stages.build_trainset(keeps, groups)
    data_stages.write_trainset(out, kept, dropped=len(groups) - len(kept))
    kept_by_filter = {row: len(keep) for row, keep in keeps.items()}
    if not kept:
        from harness.errors import HarnessError

        raise HarnessError(empty_trainset_reason(pipe.exp, pipe.methods, len(groups), keeps))
    return {"prompts": len(kept), "dropped_by_filters": len(groups) - len(kept), "sampled_prompts": len(groups),
            "kept_by_filter": kept_by_filter}


def empty_trainset_reason(exp: Experiment, methods: dict[str, Any], sampled: int, keeps: dict[str, set[str]]) -> str:
    """Why no prompt is left to train on, naming the setting or the methods' filters responsible."""
    sampling = exp.sampling
    if not sampled:
        finished = " finished" if sampling.drop_unfinished else ""
        return (f"sampling kept no prompt: each of the {exp.prompts.count} prompts had fewer than sampling.n "
                f"({sampling.n}) distinct{finished} responses among its {sampling.candidates} candidates; raise "
                f"sampling.temperature ({sampling.temperature:g}) or sampling.candidates"
                + (", or set sampling.drop_unfinished: false" if sampling.drop_unfinished else ""))
    kept = "; ".join(f"{row}'s filter kept {len(keep)}" for row, keep in keeps.items())
    switches = ", ".join(f"{row}'s {name}" for row in keeps
                         for name in (getattr(methods[row], "filter_params", None) or ("params",)))
    return (f"no training prompt is kept by every method's data filter ({sampled} sampled; {kept}); use more "
            f"prompts (prompts.count) or turn off a filter ({switches})")
