"""Data stages: prompts -> samples -> shared signals -> the training set every method trains on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import DataParallelConfig, Experiment
from harness.methods.base import Method, PromptGroup
from harness.prompts import load_prompts
from harness.stages.base import Stage
from harness.stages.chunks import Chunks
from harness.store import concat_jsonl, read_jsonl, write_json_atomic, write_jsonl

if TYPE_CHECKING:
    from harness.stages.context import RunContext


class PromptsStage(Stage):
    kind = "prompts"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx, "prompts")

    def inputs(self) -> dict[str, Any]:
        return {"prompts": self.ctx.exp.prompts}

    def run(self, out: Path) -> dict[str, Any]:
        return run_prompts(self.ctx.exp, out)

    def read(self) -> list[dict[str, Any]]:
        return read_prompts(self.artifact.path)


def chunk_inputs(exp: Experiment) -> dict[str, Any]:
    """The chunk size in a per-prompt stage's key when it is not the default (keys made before chunking
    existed stay valid: the default's single-chunk results are what was computed then)."""
    default = DataParallelConfig.model_fields["chunk"].default
    return {} if exp.data_parallel.chunk == default else {"chunk": exp.data_parallel.chunk}


def chunks_of(ctx: RunContext, stage: Stage, n_items: int) -> Chunks:
    return Chunks(ctx.store, stage.artifact, n_items, ctx.exp.data_parallel.chunk, ctx.processes)


def chunk_leftovers(ctx: RunContext, stage: Stage) -> list[Path]:
    chunks = ctx.store.work_path(stage.artifact) / "chunks"
    return [chunks] if chunks.exists() else []


class SamplesStage(Stage):
    """The sampler's (`sampling.sampler`: the student by default) candidates per prompt, split in chunks
    of prompts across the processes of a launch (harness.stages.chunks)."""

    kind = "samples"
    collective = True  # every process samples its chunks; the main process merges them

    def __init__(self, ctx: RunContext, prompts: PromptsStage) -> None:
        super().__init__(ctx, "samples")
        self.prompts = prompts
        self.sampler = ctx.handle(ctx.exp.sampling.sampler)

    def inputs(self) -> dict[str, Any]:
        exp = self.ctx.exp
        sampler = self.ctx.teacher_key if self.sampler.name == "teacher" else self.ctx.student_key
        return {"prompts": self.prompts.artifact.key, "sampler": sampler, "sampling": exp.sampling,
                "backend": self.ctx.backend_key(exp.sampling.backend), **chunk_inputs(exp)}

    def run(self, out: Path) -> dict[str, Any] | None:
        ctx = self.ctx
        prompts = self.prompts.read()
        generators: list[Any] = []  # built on the first chunk to compute: none when all are done

        def compute(items: slice, part: Path) -> dict[str, Any]:
            if not generators:
                generators.append(ctx.models.generator(self.sampler, ctx.exp.sampling.backend))
            return run_samples(ctx.exp, prompts[items], generators[0], part)

        try:
            if ctx.exp.prompts.count_after_filters:
                from harness.stages.drawing import draw_until_kept

                return draw_until_kept(ctx, self, len(prompts), compute, out)
            work = chunks_of(ctx, self, len(prompts))
            work.compute_mine(compute)
        finally:
            for generator in generators:
                generator.close()  # an engine (vLLM) is not kept beside the scoring and training that follow
        if not ctx.processes.is_main:
            return None
        concat_jsonl(work.wait_all(), "samples.jsonl", out)
        return work.merged_manifest()

    def drawn(self) -> int | None:
        """How many prompts of the pool were drawn (`prompts.count_after_filters`), once sampled; else None."""
        if not (self.ctx.exp.prompts.count_after_filters and self.artifact.done):
            return None
        return int(self.artifact.manifest()["drawn_prompts"])

    def answered_prompts(self) -> list[dict[str, Any]]:
        """The prompts a source that reads prompts (the teacher's own samples) answers: every prompt drawn, or
        with `prompts.count_after_filters` the ones the sampling kept (the pool holds the whole source)."""
        prompts = self.prompts.read()
        if not self.ctx.exp.prompts.count_after_filters:
            return prompts
        kept = {rec["prompt_id"] for rec in self.read()}
        return [p for p in prompts if p["prompt_id"] in kept]

    def after_commit(self) -> None:
        chunks_of(self.ctx, self, 0).remove()

    def leftovers(self) -> list[Path]:
        return chunk_leftovers(self.ctx, self)

    def read(self) -> list[dict[str, Any]]:
        return read_samples(self.artifact.path)

    def groups(self) -> list[PromptGroup]:
        return groups_from(self.read(), {})


def run_prompts(exp: Experiment, out: Path) -> dict[str, Any]:
    prompt_set = load_prompts(exp.prompts)
    write_jsonl(out / "prompts.jsonl", prompt_set.prompts)
    # With count_after_filters the artifact is the pool the samples stage draws from (harness.stages.drawing).
    pool = {"keep_after_filters": exp.prompts.count} if exp.prompts.count_after_filters else {}
    return {"source": prompt_set.source, "data_version": prompt_set.version, "count": len(prompt_set.prompts),
            **pool}


def read_prompts(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path / "prompts.jsonl")


def run_samples(exp: Experiment, prompts: list[dict[str, Any]], generator: Any, out: Path) -> dict[str, Any]:
    """Sample candidates with the sampler's generator (student by default), keep n diverse ones per prompt."""
    from harness.sampling import sample_prompts

    result = sample_prompts(generator, generator.loaded.formatter, prompts, exp.sampling, progress=True)
    write_jsonl(out / "samples.jsonl", result.records)
    who = "teacher" if exp.sampling.sampler == "teacher" else "student"
    return {
        "sampler": who,
        "kept_prompts": len(result.records),
        "dropped_prompts": result.dropped,
        "unfinished": {"candidates": result.stats["unfinished_candidates"],
                       "candidates_total": result.stats["candidates_total"],
                       "kept": result.stats["unfinished_responses"], "of": result.stats["responses_kept"]},
        "accounting": {f"{who}_generation_tokens": result.generated_tokens},
    }


def read_samples(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path / "samples.jsonl")


def groups_from(samples: list[dict[str, Any]], signals: dict[str, Any]) -> list[PromptGroup]:
    """Join samples with signals: list-valued signals align by position, dict-valued ones by prompt id."""
    groups = []
    for i, rec in enumerate(samples):
        sig = {name: values[rec["prompt_id"]] if isinstance(values, dict) else values[i]
               for name, values in signals.items()}
        groups.append(PromptGroup(rec["prompt_id"], rec["messages"], rec["responses"], sig, rec.get("finished")))
    return groups


def filter_keeps(methods: dict[str, Method], groups: list[PromptGroup]) -> dict[str, set[str]]:
    """Per row whose method filters its data, the prompt ids its filter keeps (each filter runs once)."""
    return {row: {g.prompt_id for g in method.filter_groups(groups)} for row, method in methods.items()
            if method.filter_identity() is not None}


def build_trainset(keeps: dict[str, set[str]], groups: list[PromptGroup]) -> list[PromptGroup]:
    """The SAME prompts for every method: the intersection of what each method's filter keeps
    (`filter_keeps`), in sample order (the trainer shuffles per seed)."""
    return [g for g in groups if all(g.prompt_id in keep for keep in keeps.values())]


def write_trainset(out: Path, groups: list[PromptGroup], dropped: int) -> None:
    write_json_atomic(out / "prompt_ids.json", {"prompt_ids": [g.prompt_id for g in groups], "dropped": dropped})


def read_trainset_ids(path: Path) -> list[str]:
    return json.loads((path / "prompt_ids.json").read_text())["prompt_ids"]

