"""External rows (`external:`): models trained elsewhere and answers made by other tools, as leaderboard rows.

- A model (`external: - {label, model}`) is a `ModelRow` of kind "external" with its own handle: it answers
  every benchmark through the run's generation backend, with its own chat template and no context, exactly
  like the untrained student; the pool holds at most one external model at a time.
- Answers files (`external: - {label, answers: {benchmark: file}}`) become the row's answers artifacts by
  `ImportedAnswersStage`: the benchmark's `read_official_answers` turns the official file into the records
  `generate` writes, checked against the benchmark's items; the judgement stage that follows is the one
  every row has, so the same answers get the same judgements (from the judge cache when already judged).
  The artifact's key holds the file's content hash, not its path: a copied file is the same input.

Either way the row trained under no budget of this run, and the report says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import ExternalSpec
from harness.models.handles import ModelHandle
from harness.stages.evaluation import AnswersStage, ModelRow
from harness.store import write_jsonl

if TYPE_CHECKING:
    from harness.stages.context import RunContext


def external_rows(ctx: RunContext) -> list[ModelRow]:
    """One row per `external:` entry, in the file's order."""
    rows = []
    for spec in ctx.exp.external:
        if spec.model is not None:
            key = {"external": ctx.identify(spec.model)}
            handle = ModelHandle(f"external {spec.label}", spec.model, key, external=True)
        else:  # answers files: nothing is loaded; the handle only names the row (its key: the files' hashes)
            handle = ModelHandle(f"external {spec.label}", ctx.exp.student, {"external_answers": spec.label},
                                 external=True)
        rows.append(ModelRow(spec.label, "external", handle, external=spec))
    return rows


def answered_benchmarks(ctx: RunContext, row: ModelRow) -> list[int]:
    """The benchmarks a row answers: all of them, except that an answers-files row answers only those it
    has a file for."""
    indices = ctx.benchmark_indices()
    spec = row.external
    if spec is None or spec.model is not None:
        return indices
    return [b for b in indices if ctx.exp.benchmarks[b].name in spec.answers]


def file_digest(path: Path) -> str:
    from harness.store import file_checksum

    return file_checksum(path)


class ImportedAnswersStage(AnswersStage):
    """An external row's answers to one benchmark, read from the official answers file it names."""

    def __init__(self, ctx: RunContext, row: ModelRow, index: int, siblings: list[AnswersStage]) -> None:
        super().__init__(ctx, row, index, siblings)
        assert row.external is not None
        self.file = Path(row.external.answers[self.bench_spec.name])

    def inputs(self) -> dict[str, Any]:
        return {"external_answers": {"label": self.row.row, "file": file_digest(self.file)},
                "benchmark": self.bench_spec}

    def run(self, out: Path) -> dict[str, Any]:
        bench = self.benchmark()
        data = bench.load()
        answers = bench.read_official_answers(self.file, data)
        write_jsonl(out / "answers.jsonl", answers)
        (out / "data.json").write_text(json.dumps({"source": data.source, "version": data.version,
                                                   "n_items": len(data.items)}))
        return {"source": data.source, "data_version": data.version, "decoding": {"external_file": str(self.file)},
                "model": {"external": self.row.row, "answers_file": str(self.file)},
                "accounting": {"eval_generation_tokens": 0}}


def answers_stage(ctx: RunContext, row: ModelRow, index: int, siblings: list[AnswersStage]) -> AnswersStage:
    """The stage that gives a row its answers to benchmark `index`: generated, or read from a file."""
    spec: ExternalSpec | None = row.external
    if spec is not None and spec.model is None:
        return ImportedAnswersStage(ctx, row, index, siblings)
    return AnswersStage(ctx, row, index, siblings)


def describe_external(spec: ExternalSpec) -> dict[str, Any]:
    """What results.json records of an external row: where its answers came from."""
    if spec.model is not None:
        return {"model": spec.model.model, "revision": spec.model.revision,
                "note": "evaluated here; trained elsewhere, not under this run's matched budget"}
    return {"answers": dict(spec.answers),
            "note": "answers made elsewhere and judged here; not trained under this run's matched budget"}
