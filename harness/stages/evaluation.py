"""Evaluation stages: answers (model x benchmark) -> judgements -> scores.

The teacher answers with its own context (that is what makes it the stronger model); the untrained
student and every trained student answer with none. Greedy decoding unless a benchmark says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.benchmarks.base import Answer, AnswerModel, Benchmark
from harness.config import BenchmarkSpec, ExternalSpec, JudgeSpec, MethodSpec
from harness.judges.base import Judge
from harness.judges.choice import is_official, judge_key, judge_spec_for
from harness.models.base import GenerationRequest, LoadedModel, SamplingParams
from harness.models.handles import ModelHandle
from harness.models.residency import park
from harness.registry import BACKENDS
from harness.stages.base import Stage
from harness.stages.row_answers import PrefetchedGenerator
from harness.store import Artifact, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from harness.stages.context import RunContext
    from harness.stages.training import TrainStage


@dataclass
class ModelRow:
    """One evaluated model: the teacher, the untrained student, or a trained (method, seed)."""

    row: str
    kind: str  # teacher | student | method
    handle: ModelHandle
    method: MethodSpec | None = None
    seed: int | None = None
    train_stage: TrainStage | None = None
    external: ExternalSpec | None = None  # an `external:` row (harness.stages.external)

    @property
    def key(self) -> dict[str, Any]:
        """What identifies its weights + context, for downstream cache keys."""
        return self.handle.key

    @property
    def train(self) -> Artifact | None:
        return self.train_stage.artifact if self.train_stage is not None else None


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
        decode = self.loaded.formatter.tokenizer.decode  # the continuation unstripped, as lm-eval decodes it
        return [Answer(out.texts[0], bool(out.finished[0]) if out.finished else False,
                       raw=decode(out.token_ids[0], skip_special_tokens=True) if out.token_ids else None)
                for out in outputs]


class AnswersStage(Stage):
    """A row's answers to one benchmark, from `generation_backend`."""

    kind = "answers"

    def __init__(self, ctx: RunContext, row: ModelRow, index: int, siblings: list[AnswersStage]) -> None:
        self.ctx, self.index = ctx, index
        bench = self.bench_spec
        super().__init__(ctx, f"{row.row}-s{row.seed}-{bench.name}{self.label_suffix}" if row.seed is not None
                         else f"{row.row}-{bench.name}{self.label_suffix}")
        self.row = row
        self.siblings = siblings  # the row's answers stages: what one engine start answers together
        self.engine_key = ctx.models.engine_key(row.handle, ctx.exp.generation_backend)

    label_suffix = ""

    @property
    def bench_spec(self) -> BenchmarkSpec:
        return self.ctx.exp.benchmarks[self.index]

    def benchmark(self) -> Benchmark:
        return self.ctx.benchmark(self.index)

    def split_inputs(self) -> dict[str, Any]:
        """Which items of the benchmark (the test split: no entry, so its keys stay as they were)."""
        return {}

    def inputs(self) -> dict[str, Any]:
        ctx = self.ctx
        # A benchmark that reads the run's prompts and models (teacher agreement) depends on them too.
        run = ({"run": {"prompts": ctx.exp.prompts, "teacher": ctx.teacher_key, "student": ctx.student_key}}
               if self.benchmark().uses_run else {})
        version = self.benchmark().answers_version  # 0: no entry, so the keys of other benchmarks stay
        return {"model": self.row.key, "benchmark": self.bench_spec,
                "backend": ctx.backend_key(ctx.exp.generation_backend), **run, **self.split_inputs(),
                **({"benchmark_answers_version": version} if version else {})}

    def run(self, out: Path) -> dict[str, Any]:
        ctx, row = self.ctx, self.row
        bench = self.benchmark()
        data = bench.load()
        backend = ctx.exp.generation_backend
        weights = BACKENDS.get(backend).uses_loaded_weights
        # One engine for all of this row's benchmarks (ModelPool.engine), shut down before anything else runs;
        # the greedy answers every benchmark declares are decoded together when it starts (row_answers).
        generator = ctx.models.engine(row.handle, backend, wrap=self._prefetched)
        # Benchmarks that score text (multiple choice, teacher agreement) use the row's model in memory.
        loaded = ctx.models.loaded(row.handle, weights=weights or bench.needs_weights)
        before = generator.generated_tokens
        answers = bench.generate(GeneratorAnswerModel(loaded, row.row, generator,
                                                      scoring_batch_size=ctx.exp.sampling.batch_size), data)
        if not weights and bench.needs_weights:
            park(loaded)  # its weights were brought back for scoring; the engine has the device again
        write_jsonl(out / "answers.jsonl", answers)
        (out / "data.json").write_text(json.dumps({"source": data.source, "version": data.version,
                                                   "n_items": len(data.items)}))
        return {"source": data.source, "data_version": data.version, "decoding": bench.decoding,
                "model": loaded.identity, "accounting": {"eval_generation_tokens": generator.generated_tokens - before}}

    def _prefetched(self, generator: Any) -> PrefetchedGenerator:
        """The row's generator, having answered the greedy conversations of every benchmark still to answer."""
        prefetched = PrefetchedGenerator(generator)
        formatter = generator.loaded.formatter
        requests = []
        for sibling in self.siblings:
            if sibling.done:
                continue
            bench = sibling.benchmark()
            for conversation in bench.greedy_conversations(bench.load()) or []:
                requests.append(GenerationRequest(formatter.prompt_ids(conversation), seed=0,
                                                  max_new_tokens=bench.max_new_tokens))
        prefetched.prefetch(requests, progress=f"{self.row.row}: answers to every benchmark")
        return prefetched


def judge_spec(ctx: RunContext, index: int, bench: Benchmark | None = None) -> JudgeSpec:
    """The judge of benchmark `index`: its own, else the experiment's, `official` resolved."""
    return judge_spec_for(ctx.exp.judge, ctx.exp.benchmarks[index], bench or ctx.benchmark(index))


def judge_identity_for_key(ctx: RunContext, index: int) -> dict[str, Any] | None:
    """What of benchmark `index`'s judge changes its judgements (None for a judge-free benchmark)."""
    bench = ctx.benchmark(index)
    return judge_key(judge_spec(ctx, index, bench)) if bench.needs_judge else None


def _judge_of(ctx: RunContext, answers: AnswersStage, bench: Benchmark) -> JudgeSpec | None:
    return judge_spec_for(ctx.exp.judge, answers.bench_spec, bench) if bench.needs_judge else None


def describe_judge(ctx: RunContext, index: int) -> str:
    """`judge <model> (<backend>, official|NOT the official <model>)`, or `judge-free`."""
    bench = ctx.benchmark(index)
    if not bench.needs_judge:
        return "judge-free"
    spec = judge_spec(ctx, index, bench)
    verdict = "official" if is_official(spec, bench) else f"NOT the official {bench.official_judge()}"
    return f"judge {spec.model} ({spec.backend}, {verdict})"


class JudgementsStage(Stage):
    """The judge's verdicts on a row's answers to one benchmark (judge-free benchmarks grade themselves)."""

    kind = "judgements"

    def __init__(self, ctx: RunContext, answers: AnswersStage, detail: str) -> None:
        super().__init__(ctx, answers.label)
        self.answers = answers
        self.index = answers.index
        self.detail = detail

    def inputs(self) -> dict[str, Any]:
        spec = _judge_of(self.ctx, self.answers, self.answers.benchmark())
        return {"answers": self.answers.artifact.key, "judge": judge_key(spec) if spec is not None else None}

    def run(self, out: Path) -> dict[str, Any]:
        ctx = self.ctx
        bench = self.answers.benchmark()
        data = bench.load()
        answers = read_jsonl(self.answers.artifact.path / "answers.jsonl")
        spec = _judge_of(ctx, self.answers, bench)
        judge = ctx.judge(spec) if spec is not None else None
        before = _judge_counters(judge)
        judgements = bench.judge(judge, data, answers)
        write_jsonl(out / "judgements.jsonl", judgements)
        after = _judge_counters(judge)
        used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        official = {"official_judge": bench.official_judge(),
                    "judge_is_official": is_official(spec, bench) if spec is not None else None}
        return {"judge": judge.identity if judge is not None else None, "judge_usage": used, **official}

    def score(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(ScoreResult, answers manifest, judgements manifest): scoring is cheap, so it is not cached."""
        result = self.answers.benchmark().score(read_jsonl(self.artifact.path / "judgements.jsonl"))
        return result, self.answers.artifact.manifest(), self.artifact.manifest()


def _judge_counters(judge: Judge | None) -> dict[str, float]:
    return dict(judge.counters()) if judge is not None else {}


__all__ = ["AnswersStage", "GeneratorAnswerModel", "JudgementsStage", "ModelRow"]
