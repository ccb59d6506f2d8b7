"""Evaluation stages: answers (model x benchmark) -> judgements -> scores.

The teacher answers with its own context (that is what makes it the stronger model); the untrained
student and every trained student answer with none. Greedy decoding unless a benchmark says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.benchmarks.base import Answer, AnswerModel, Benchmark, BenchmarkData
from harness.models.base import GenerationRequest, LoadedModel, SamplingParams
from harness.registry import BENCHMARKS
from harness.stages.data import build_generator
from harness.store import read_jsonl, write_jsonl

if TYPE_CHECKING:
    from harness.pipeline import ModelRow, Pipeline


class GeneratorAnswerModel(AnswerModel):
    """Benchmarks see the model under test only through this: chat in, greedy answer out."""

    def __init__(self, loaded: LoadedModel, name: str, generator: Any) -> None:
        self.loaded = loaded
        self._name = name
        self.generator = generator

    @property
    def name(self) -> str:
        return self._name

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        requests = [GenerationRequest(self.loaded.formatter.prompt_ids(conv), seed=i)
                    for i, conv in enumerate(conversations)]
        params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
        outputs = self.generator.generate(requests, params, progress=progress)
        return [Answer(out.texts[0], bool(out.finished[0]) if out.finished else False) for out in outputs]


def build_benchmark(pipe: Pipeline, index: int) -> Benchmark:
    spec = pipe.exp.benchmarks[index]
    cls = BENCHMARKS.get(spec.name)
    return cls(spec.params, subset=spec.subset, max_new_tokens=spec.max_new_tokens)


def _loaded_for_row(pipe: Pipeline, row: ModelRow) -> LoadedModel:
    if row.kind == "teacher":
        return pipe.teacher()
    if row.kind == "student":
        return pipe.student()
    from harness.training.trainer import load_trained_weights

    assert row.train is not None
    cache_key = f"trained:{row.train.key}"
    if cache_key not in pipe._models:
        base = pipe.student()
        from harness.stages.training import fresh_student

        loaded = fresh_student(pipe)
        load_trained_weights(loaded.model, row.train.path)
        loaded.identity = {**base.identity, "trained": row.train.key}
        # Keep at most one trained student in memory: rows are evaluated one after another.
        for stale in [k for k in pipe._models if k.startswith("trained:")]:
            del pipe._models[stale]
        pipe._models[cache_key] = loaded
    return pipe._models[cache_key]


def run_answers(pipe: Pipeline, row: ModelRow, index: int, out: Path) -> dict[str, Any]:
    bench = build_benchmark(pipe, index)
    data = bench.load()
    loaded = _loaded_for_row(pipe, row)
    generator = build_generator(pipe.exp.generation_backend, loaded, pipe.exp.sampling.batch_size)
    answer_model = GeneratorAnswerModel(loaded, row.row, generator)
    answers = bench.generate(answer_model, data)
    write_jsonl(out / "answers.jsonl", answers)
    (out / "data.json").write_text(json.dumps({"source": data.source, "version": data.version,
                                               "n_items": len(data.items)}))
    generated = int(getattr(generator, "generated_tokens", 0))
    return {"source": data.source, "data_version": data.version, "decoding": bench.decoding,
            "model": loaded.identity, "accounting": {"eval_generation_tokens": generated}}


def judge_identity_for_key(exp: Any) -> dict[str, Any]:
    """The judge settings that change judgements (never the API key)."""
    spec = exp.judge.model_dump(mode="json")
    for volatile in ("api_key_env", "concurrency", "max_retries", "timeout_s",
                     "price_per_1k_input", "price_per_1k_output"):
        spec.pop(volatile, None)
    return spec


def _judge(pipe: Pipeline) -> Any:
    if "judge" not in pipe._models:
        from harness.judges.factory import build_judge

        pipe._models["judge"] = build_judge(pipe.exp.judge, pipe.run_dir / "judge_cache.sqlite")
    return pipe._models["judge"]


def run_judgements(pipe: Pipeline, row: ModelRow, index: int, out: Path) -> dict[str, Any]:
    bench = build_benchmark(pipe, index)
    data = bench.load()
    answers = read_jsonl(pipe.answers_artifact(row, index).path / "answers.jsonl")
    judge = _judge(pipe) if bench.needs_judge else None
    before = _judge_counters(judge)
    judgements = bench.judge(judge, data, answers)
    write_jsonl(out / "judgements.jsonl", judgements)
    after = _judge_counters(judge)
    used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"judge": getattr(judge, "identity", None), "judge_usage": used}


def _judge_counters(judge: Any) -> dict[str, float]:
    if judge is None:
        return {}
    counters = getattr(judge, "counters", None)
    if callable(counters):
        counters = counters()
    return dict(counters or {})


def score_row(pipe: Pipeline, row: ModelRow, index: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(ScoreResult, answers manifest, judgements manifest) — scoring is cheap, so it is not cached."""
    bench = build_benchmark(pipe, index)
    judged = pipe.judgements_artifact(row, index)
    result = bench.score(read_jsonl(judged.path / "judgements.jsonl"))
    return result, pipe.answers_artifact(row, index).manifest(), judged.manifest()


__all__ = ["GeneratorAnswerModel", "BenchmarkData", "run_answers", "run_judgements", "score_row"]
