"""The train stage: one run per (method, seed), all under the experiment's one budget."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.methods.base import PromptGroup
from harness.models.base import LoadedModel
from harness.stages import data as data_stages
from harness.stages.signals_stage import load_signal

if TYPE_CHECKING:
    from harness.pipeline import ModelRow, Pipeline


def training_groups(pipe: Pipeline, signal_names: list[str] | frozenset[str]) -> list[PromptGroup]:
    """The shared training set (same prompts for every method) with the signals this method reads."""
    samples = data_stages.read_samples(pipe.samples_artifact().path)
    signals = {name: load_signal(name, pipe.signal_artifact(name).path) for name in sorted(signal_names)}
    groups = data_stages.groups_from(samples, signals)
    keep = set(data_stages.read_trainset_ids(pipe.trainset_artifact().path))
    return [g for g in groups if g.prompt_id in keep]


def precompute_accounting(pipe: Pipeline, signal_names: list[str] | frozenset[str]) -> dict[str, int]:
    """The shared precompute this method relies on, attributed to it in full (the sampling it trains on
    and every signal it reads), so 'matched budget' compares all the work each method needed."""
    totals: dict[str, int] = {}
    arts = [pipe.samples_artifact()] + [pipe.signal_artifact(n) for n in sorted(signal_names)]
    for art in arts:
        for key, value in (art.manifest().get("accounting") or {}).items():
            if key.endswith("_params"):  # a model size, not a count of work
                totals[key] = max(totals.get(key, 0), int(value))
            else:
                totals[key] = totals.get(key, 0) + int(value)
    return totals


def fresh_student(pipe: Pipeline) -> LoadedModel:
    base = pipe.student()
    return LoadedModel(model=copy.deepcopy(base.model), tokenizer=base.tokenizer, formatter=base.formatter,
                       identity=dict(base.identity), device=base.device)


def run_training(pipe: Pipeline, row: ModelRow, out: Path, stop_after_steps: int | None = None) -> dict[str, Any]:
    from harness.training.trainer import train

    assert row.method is not None and row.train is not None and row.seed is not None
    method = pipe.methods[row.method.row_name]
    needed = method.signals_needed()
    groups = training_groups(pipe, needed)
    work_dir = pipe.store.work_dir(row.train)
    # On-policy samples (GKD) come from the configured sampling backend (vllm: an engine following the weights).
    sampler = pipe.engines.track(data_stages.live_sampler(pipe.exp, pipe.student())) if method.on_policy else None
    try:
        result = train(
            method, groups, fresh_student(pipe), pipe.exp.budget, row.seed, work_dir, out,
            logging=pipe.exp.logging, precompute_accounting=precompute_accounting(pipe, needed),
            teacher_loader=pipe.teacher if method.on_policy else None, generator=sampler,
            stop_after_steps=stop_after_steps, progress=pipe.progress,
        )
    finally:
        if sampler is not None:
            sampler.close()
    random.seed()  # leave no global RNG state behind for the next stage
    return {"accounting": result.accounting, "method": row.method.name, "seed": row.seed,
            "prompts": len(groups)}


def release_checkpoints(pipe: Pipeline, row: ModelRow) -> None:
    """The trained model is stored: its resume checkpoints (~3x the model each) are no longer needed."""
    from harness.training.checkpoint import remove_checkpoints

    assert row.train is not None
    if not pipe.exp.budget.keep_checkpoints:
        remove_checkpoints(pipe.store.work_dir(row.train))
