"""Evaluation stages: answers (model x benchmark) -> judgements -> scores.

The teacher answers with its own context (that is what makes it the stronger model); the untrained
student and every trained student answer with none. Greedy decoding unless a benchmark says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.benchmarks.base import Answer, AnswerModel, Benchmark, BenchmarkData, benchmark_from_spec
from harness.config import JudgeSpec
from harness.judges.choice import is_official, judge_key, judge_spec_for
from harness.models.base import GenerationRequest, LoadedModel, SamplingParams
from harness.models.residency import park
from harness.registry import BACKENDS
from harness.stages.row_answers import PrefetchedGenerator
from harness.store import hash_inputs, read_jsonl, write_json_atomic, write_jsonl

if TYPE_CHECKING:
    from harness.models.scoring import Scorer
    from harness.pipeline import ModelRow, Pipeline


class GeneratorAnswerModel(AnswerModel):
    """Benchmarks see the model under test only through this: chat in, greedy answer out."""

    def __init__(self, loaded: LoadedModel, name: str, generator: Any, scoring_batch_size: int = 8) -> None:
        self.loaded = loaded
        self._name = name
        self.generator = generator
        self.scoring_batch_size = scoring_batch_size

    @property
    def name(self) -> str:
        return self._name

    def in_memory(self) -> LoadedModel:
        return self.loaded

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        requests = [GenerationRequest(self.loaded.formatter.prompt_ids(conv), seed=i)
                    for i, conv in enumerate(conversations)]
        params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
        outputs = self.generator.generate(requests, params, progress=progress)
        return [Answer(out.texts[0], bool(out.finished[0]) if out.finished else False) for out in outputs]


def trained_identity(base: dict[str, Any], train_key: str, weights_dir: Path) -> dict[str, Any]:
    """A trained row's identity: the base student's tokenizer, template, context and dtype, and its OWN
    weights, the train artifact's directory (a backend that loads weights from disk, vLLM, must load these,
    not the base model's `path`)."""
    ident = {key: value for key, value in base.items() if key not in ("path", "revision", "weights")}
    ident.update({"trained": train_key, "path": str(weights_dir)})
    if base.get("path") is not None:
        ident["tokenizer_path"] = base["path"]
        if base.get("source") == "hf" and base.get("revision"):
            ident["tokenizer_revision"] = base["revision"]
    return ident


def build_benchmark(pipe: Pipeline, index: int) -> Benchmark:
    bench = benchmark_from_spec(pipe.exp.benchmarks[index])
    if bench.uses_run:
        bench.bind(PipelineRun(pipe))
    return bench


class PipelineRun:
    """The run as a benchmark sees it (`harness.benchmarks.base.RunContext`)."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.batch_size = pipe.exp.signals.batch_size
        self.generation_batch_size = pipe.exp.sampling.batch_size

    def held_out_prompts(self, n: int) -> tuple[list[dict[str, Any]], str]:
        from harness.prompts import load_held_out

        held = load_held_out(self.pipe.exp.prompts, n)
        return held.prompts, held.source

    def teacher(self) -> LoadedModel:
        return self.pipe.teacher()

    def teacher_scorer(self) -> Scorer:
        from harness.models.scoring import Scorer

        teacher = self.teacher()  # its weights back in place if an engine had them parked
        if "scorer:teacher" not in self.pipe._models:  # rows are evaluated one after another: kept for the run
            self.pipe._models["scorer:teacher"] = Scorer(teacher, batch_size=self.batch_size, remember_prompts=8)
        return self.pipe._models["scorer:teacher"]

    def student(self) -> LoadedModel:
        return self.pipe.student()

    def cached(self, name: str, inputs: dict[str, Any], compute: Callable[[], Any]) -> Any:
        art = self.pipe.store.artifact("shared", name, {**inputs, "teacher": self.pipe.teacher_key,
                                                        "student": self.pipe.student_key})
        if art.done and (problem := art.verify()) is not None:
            self.pipe.store.set_aside(art, problem)  # damaged: rebuilt below, never used
        if not art.done:
            with self.pipe.store.writing(art) as out:
                write_json_atomic(out / "values.json", compute())
        return json.loads(art.file("values.json").read_text())


def _loaded_for_row(pipe: Pipeline, row: ModelRow, weights: bool = True) -> LoadedModel:
    """The row's model; `weights=False` (a backend that loads weights from disk itself): a trained row is
    its identity and the student's tokenizer only, no copy of the student with its weights loaded."""
    if row.kind == "teacher":
        return pipe.teacher(weights)
    if row.kind == "student":
        return pipe.student(weights)
    from harness.training.trainer import load_trained_weights

    assert row.train is not None
    if not weights:
        base = pipe.student(weights=False)
        return LoadedModel(model=base.model, tokenizer=base.tokenizer, formatter=base.formatter,
                           identity=trained_identity(base.identity, row.train.key, row.train.path),
                           device=base.device)
    cache_key = f"trained:{row.train.key}"
    if cache_key not in pipe._models:
        base = pipe.student()
        from harness.stages.training import fresh_student

        loaded = fresh_student(pipe)
        load_trained_weights(loaded.model, row.train.path)
        loaded.identity = trained_identity(base.identity, row.train.key, row.train.path)
        # Keep at most one trained student in memory: rows are evaluated one after another.
        for stale in [k for k in pipe._models if k.startswith("trained:")]:
            del pipe._models[stale]
        pipe._models[cache_key] = loaded
    return pipe._models[cache_key]


def _row_generator(pipe: Pipeline, row: ModelRow, backend: str, weights: bool) -> PrefetchedGenerator:
    """The row's generator, having answered the greedy conversations of every benchmark still to answer."""
    loaded = _loaded_for_row(pipe, row, weights=weights)
    generator = PrefetchedGenerator(pipe.generator(backend, loaded))
    requests = []
    for b in pipe.benchmark_indices():
        if pipe.answers_artifact(row, b).done:
            continue
        bench = build_benchmark(pipe, b)
        for conversation in bench.greedy_conversations(bench.load()) or []:
            requests.append(GenerationRequest(loaded.formatter.prompt_ids(conversation), seed=0,
                                              max_new_tokens=bench.max_new_tokens))
    generator.prefetch(requests, progress=f"{row.row}: answers to every benchmark")
    return generator


def run_answers(pipe: Pipeline, row: ModelRow, index: int, out: Path) -> dict[str, Any]:
    bench = build_benchmark(pipe, index)
    data = bench.load()
    backend = pipe.exp.generation_backend
    weights = BACKENDS.get(backend).uses_loaded_weights
    # One engine for all of this row's benchmarks (harness.engines), shut down before anything else runs;
    # the greedy answers every benchmark declares are decoded together when it starts (row_answers).
    generator = pipe.engines.get(f"{row.row}|{row.seed}", lambda: _row_generator(pipe, row, backend, weights))
    # Benchmarks that score text (multiple choice, teacher agreement) use the row's model in memory.
    loaded = _loaded_for_row(pipe, row, weights=weights or bench.needs_weights)
    before = generator.generated_tokens
    answers = bench.generate(GeneratorAnswerModel(loaded, row.row, generator,
                                                  scoring_batch_size=pipe.exp.sampling.batch_size), data)
    if not weights and bench.needs_weights:
        park(loaded)  # its weights were brought back for scoring; the engine has the device again
    write_jsonl(out / "answers.jsonl", answers)
    (out / "data.json").write_text(json.dumps({"source": data.source, "version": data.version,
                                               "n_items": len(data.items)}))
    generated = generator.generated_tokens - before
    return {"source": data.source, "data_version": data.version, "decoding": bench.decoding,
            "model": loaded.identity, "accounting": {"eval_generation_tokens": generated}}


def judge_spec(pipe: Pipeline, index: int) -> JudgeSpec:
    """The judge of benchmark `index`: its own, else the experiment's, `official` resolved."""
    return judge_spec_for(pipe.exp.judge, pipe.exp.benchmarks[index], build_benchmark(pipe, index))


def judge_identity_for_key(pipe: Pipeline, index: int) -> dict[str, Any] | None:
    """What of benchmark `index`'s judge changes its judgements (None for a judge-free benchmark)."""
    if not build_benchmark(pipe, index).needs_judge:
        return None
    return judge_key(judge_spec(pipe, index))


def describe_judge(pipe: Pipeline, index: int) -> str:
    """`judge <model> (<backend>, official|NOT the official <model>)`, or `judge-free`."""
    bench = build_benchmark(pipe, index)
    if not bench.needs_judge:
        return "judge-free"
    spec = judge_spec(pipe, index)
    verdict = "official" if is_official(spec, bench) else f"NOT the official {bench.official_judge()}"
    return f"judge {spec.model} ({spec.backend}, {verdict})"


def _judge(pipe: Pipeline, spec: JudgeSpec) -> Any:
    """One judge per distinct spec, shared by the benchmarks that use it; every call cached on disk."""
    cache_key = "judge:" + hash_inputs(spec.model_dump(mode="json"))
    if cache_key not in pipe._models:
        from harness.judges.factory import build_judge

        pipe._models[cache_key] = build_judge(spec, pipe.run_dir / "judge_cache.sqlite")
    return pipe._models[cache_key]


def run_judgements(pipe: Pipeline, row: ModelRow, index: int, out: Path) -> dict[str, Any]:
    bench = build_benchmark(pipe, index)
    data = bench.load()
    answers = read_jsonl(pipe.answers_artifact(row, index).path / "answers.jsonl")
    spec = judge_spec(pipe, index) if bench.needs_judge else None
    judge = _judge(pipe, spec) if spec is not None else None
    before = _judge_counters(judge)
    judgements = bench.judge(judge, data, answers)
    write_jsonl(out / "judgements.jsonl", judgements)
    after = _judge_counters(judge)
    used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    official = {"official_judge": bench.official_judge(),
                "judge_is_official": is_official(spec, bench) if spec is not None else None}
    return {"judge": getattr(judge, "identity", None), "judge_usage": used, **official}


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
