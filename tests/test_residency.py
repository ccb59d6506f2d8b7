"""While a backend that loads weights itself (vLLM) serves a model, the run's transformers copies wait in
host memory (harness.models.residency); they go back to their device when next used for their weights.

No GPU here: the models report an accelerator device and record where they are moved."""

from __future__ import annotations

from typing import Any

import torch
from conftest import make_tiny

from harness.config import parse_experiment
from harness.models.base import LoadedModel
from harness.models.residency import park, unpark
from harness.pipeline import Pipeline


class Moves(torch.nn.Linear):
    def __init__(self) -> None:
        super().__init__(2, 2)
        self.moves: list[str] = []

    def to(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.moves.append(str(args[0]))
        return self


def on_gpu() -> LoadedModel:
    return LoadedModel(model=Moves(), tokenizer=None, formatter=None, identity={}, device="cuda:0")  # type: ignore[arg-type]


def test_park_moves_accelerator_weights_to_host_once_and_unpark_brings_them_back() -> None:
    loaded = on_gpu()
    assert park(loaded) and loaded.parked and loaded.model.moves == ["cpu"]
    assert not park(loaded) and loaded.model.moves == ["cpu"]  # already parked
    assert unpark(loaded) is loaded and not loaded.parked and loaded.model.moves == ["cpu", "cuda:0"]
    assert unpark(loaded).model.moves == ["cpu", "cuda:0"]  # not parked: nothing to do


def test_models_on_cpu_are_never_moved() -> None:
    loaded = LoadedModel(model=Moves(), tokenizer=None, formatter=None, identity={}, device="cpu")  # type: ignore[arg-type]
    assert not park(loaded) and loaded.model.moves == []


def test_a_vllm_engine_parks_the_runs_models_and_the_hf_backend_does_not(tmp_path) -> None:
    exp = parse_experiment({
        "name": "park", "teacher": {"model": "tiny:llama", "seed": 1}, "student": {"model": "tiny:llama"},
        "prompts": {"source": "sharegpt", "count": 2}, "methods": [{"name": "sft"}], "benchmarks": [],
    }, "test")
    ctx = Pipeline(exp, tmp_path, progress=False).ctx
    pool = ctx.models
    teacher, student = on_gpu(), on_gpu()
    pool._base.update(teacher=teacher, student=student)
    pool.generator(ctx.student, "hf")
    assert not teacher.parked and not student.parked
    tiny = make_tiny("llama")  # a scorer that remembers prompt passes (the teacher reading every row's answers)
    pool._base["teacher"] = tiny
    remembering = pool.scorer(ctx.teacher, batch_size=4, remember_prompts=2)
    pool._base["teacher"] = teacher
    prompt = tiny.formatter.prompt_ids([{"role": "user", "content": "hi"}])
    remembering.score_groups([(prompt, [tiny.formatter.response_ids("hello")])])
    assert len(remembering._prompt_passes) == 1
    generator = pool.generator(ctx.student, "vllm")  # the engine itself starts lazily (no vLLM needed here)
    assert generator.loaded is student and teacher.parked and student.parked
    assert not remembering._prompt_passes  # its KV caches would have stayed on the device beside the engine
    assert pool.loaded(ctx.teacher, weights=False) is teacher and teacher.parked  # tokenizer/identity only
    assert pool.loaded(ctx.teacher) is teacher and not teacher.parked and teacher.model.moves == ["cpu", "cuda:0"]


def test_an_offloaded_teacher_waits_in_host_memory_while_another_model_is_used(tmp_path) -> None:
    exp = parse_experiment({
        "name": "offload", "teacher": {"model": "tiny:llama", "seed": 1, "offload": True},
        "student": {"model": "tiny:llama"}, "methods": [{"name": "sft"}], "benchmarks": [],
    }, "test")
    ctx = Pipeline(exp, tmp_path, progress=False).ctx
    pool = ctx.models
    teacher, student = on_gpu(), on_gpu()
    pool._base.update(teacher=teacher, student=student)
    pool._specs.update(teacher=exp.teacher, student=exp.student)
    assert pool.loaded(ctx.teacher) is teacher and not teacher.parked
    pool.loaded(ctx.student)  # training, scoring with the student: the teacher goes to host memory
    assert teacher.parked and not student.parked and teacher.model.moves == ["cpu"]
    pool.loaded(ctx.teacher)  # back for its own stage; the student (not marked) stays where it is
    assert not teacher.parked and not student.parked and teacher.model.moves == ["cpu", "cuda:0"]
    pool.loaded(ctx.student, weights=False)  # a tokenizer-only use moves nothing
    assert not teacher.parked
