"""`pad-harness export RUN_DIR --out DIR`: a run's answers, judgements and students in the official formats.

One folder per row, named by its label (`pad`, `pad-seed1` when a method has several seeds,
`student-untrained`), holding one folder per benchmark with the files its official tool writes
(`Benchmark.export_official`: AlpacaEval `model_outputs.json` + `annotations.json` + `leaderboard.csv`,
arena-hard-auto `model_answer/` + `model_judgment/`, FastChat's MT-Bench files, lm-eval's `--log_samples`
files) and, for a trained row, `model/`: its complete Hugging Face model directory (harness.interop.model_dir).
`export.json` at the top says what came from where (run dir, experiment hash, row, benchmark, judge).

The export reads `results.json` (which names every row's artifacts) and the artifacts themselves; it needs
no model and recomputes nothing, so it works on a run dir copied from the machine that made it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results import RowResult, RunResults

MODEL_FORMAT = "model"  # `--format model`: the trained students' directories
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "pad_harness.json")


@dataclass
class RowExport:
    row: str  # the leaderboard row (label)
    seed: int | None
    folder: str  # its folder under the export root
    files: dict[str, list[str]] = field(default_factory=dict)  # benchmark | "model" -> paths under the root
    skipped: dict[str, str] = field(default_factory=dict)  # benchmark -> why nothing was written


def safe_name(label: str) -> str:
    """A row label as a folder and model name: `student (untrained)` -> `student-untrained`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.")
    return name or "row"


def row_folders(rows: list[RowResult]) -> dict[int, str]:
    """Each row's folder: its label, with `-seed<k>` where a label has several seeds."""
    seeds: dict[str, set[int | None]] = {}
    for r in rows:
        seeds.setdefault(r.row, set()).add(r.seed)
    return {i: safe_name(r.row if len(seeds[r.row]) == 1 or r.seed is None else f"{r.row}-seed{r.seed}")
            for i, r in enumerate(rows)}


def load_results(run_dir: Path) -> RunResults:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise HarnessError(f"{run_dir}: no results.json; run the experiment first (pad-harness run FILE --run-dir "
                           f"{run_dir}), then export")
    results = RunResults.load(path)
    if not any(r.artifacts for r in results.rows):
        raise HarnessError(f"{path} names no artifacts (written by an older pad-harness); rerun `pad-harness run` "
                           f"on it (everything is cached: only the reports are rewritten), then export")
    return results


def select_rows(results: RunResults, wanted: list[str] | None) -> list[tuple[RowResult, str]]:
    """The rows to export with their folders; `wanted` holds row labels or folder names (unknown: an error)."""
    folders = row_folders(results.rows)
    pairs = [(r, folders[i]) for i, r in enumerate(results.rows)]
    if not wanted:
        return pairs
    known = {name for r, folder in pairs for name in (r.row, folder)}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise HarnessError(f"--rows: no row {unknown[0]!r} in this run; rows: {', '.join(f for _, f in pairs)}")
    return [(r, folder) for r, folder in pairs if r.row in wanted or folder in wanted]


def export_run(run_dir: Path, out: Path, rows: list[str] | None = None, formats: list[str] | None = None,
               link_models: bool = False) -> list[RowExport]:
    """Write the export of `run_dir` under `out` (see the module doc); what was written per row."""
    from harness.config import Experiment

    run_dir, out = Path(run_dir), Path(out)
    results = load_results(run_dir)
    exp = Experiment.model_validate(results.experiment)
    specs = {spec.name: spec for spec in exp.benchmarks}
    _check_formats(formats, specs)
    exported = []
    for row, folder in select_rows(results, rows):
        done = RowExport(row.row, row.seed, folder)
        if _wanted(MODEL_FORMAT, formats) and row.artifacts.get("train"):
            done.files[MODEL_FORMAT] = _export_model(run_dir / row.artifacts["train"], out / folder / "model", out,
                                                     link_models)
        for bench_name, answers_dir in (row.artifacts.get("answers") or {}).items():
            if not _wanted(bench_name, formats):
                continue
            judged_dir = (row.artifacts.get("judgements") or {}).get(bench_name)
            written, why = _export_benchmark(specs[bench_name], run_dir / answers_dir,
                                             run_dir / judged_dir if judged_dir else None,
                                             out / folder / bench_name, folder)
            if not why and not written:  # e.g. GSM8K's zeroeval protocol: no official tool logs it
                why = f"{bench_name} wrote no file for this run's settings (its official tool has no format for them)"
            if why:
                done.skipped[bench_name] = why
            else:
                done.files[bench_name] = [p.relative_to(out).as_posix() for p in written]
        exported.append(done)
    _write_index(out, run_dir, results, exported)
    return exported


def _check_formats(formats: list[str] | None, specs: dict[str, Any]) -> None:
    allowed = [MODEL_FORMAT, *specs]
    for name in formats or []:
        if name not in allowed:
            raise HarnessError(f"--format {name!r}: this run has {', '.join(allowed)}")


def _wanted(name: str, formats: list[str] | None) -> bool:
    return not formats or name in formats


def _export_model(train_dir: Path, dest: Path, root: Path, link: bool) -> list[str]:
    """The trained student's model directory: its weights, config, tokenizer and generation config."""
    files = [p for p in sorted(train_dir.iterdir()) if p.is_file() and _is_model_file(p.name)]
    if not any(p.name == "model.safetensors" for p in files):
        raise HarnessError(f"{train_dir}: no model.safetensors; the train artifact is incomplete (rerun "
                           f"`pad-harness run` to rebuild it)")
    if not any(p.name.startswith("tokenizer") for p in files):
        raise HarnessError(f"{train_dir}: a student stored before students were complete model directories (no "
                           f"tokenizer); rerun `pad-harness run`, which retrains it as a complete directory")
    dest.mkdir(parents=True, exist_ok=True)
    for src in files:
        target = dest / src.name
        target.unlink(missing_ok=True)
        if link:
            target.symlink_to(src.resolve())
        else:
            shutil.copy2(src, target)
    return [(dest / p.name).relative_to(root).as_posix() for p in files]


def _is_model_file(name: str) -> bool:
    """What a model directory holds (not the harness's own metrics, accounting or manifest)."""
    return name in MODEL_FILES or name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab",
                                                   "merges", "added_tokens"))


def _export_benchmark(spec: Any, answers_dir: Path, judged_dir: Path | None, dest: Path,
                      model: str) -> tuple[list[Path], str | None]:
    """One row's files for one benchmark, or why none were written."""
    from harness.benchmarks.base import OfficialExport, benchmark_from_spec
    from harness.store import read_jsonl

    bench = benchmark_from_spec(spec)
    if not bench.exports_official_files():
        return [], f"{spec.name} has no official file format (its answers are in the run dir: {answers_dir})"
    if bench.uses_run:
        return [], f"{spec.name} reads the run's own prompts and models; no official tool reads its files"
    answers = read_jsonl(answers_dir / "answers.jsonl")
    judged = judged_dir is not None and (judged_dir / "judgements.jsonl").is_file()
    judgements = read_jsonl(judged_dir / "judgements.jsonl") if judged_dir is not None and judged else None
    manifest = json.loads((answers_dir / "manifest.json").read_text())
    judge = _judge_name(json.loads((judged_dir / "manifest.json").read_text())) if judged_dir and judged else None
    dest.mkdir(parents=True, exist_ok=True)
    data = bench.load()
    written = bench.export_official(data, answers, judgements,
                                    OfficialExport(dest, model, judge, _timestamp(manifest)))
    return written, None


def _judge_name(manifest: dict[str, Any]) -> str | None:
    """The judge's model name from a judgements manifest (None for a judge-free benchmark)."""
    key = (manifest.get("inputs") or {}).get("judge")
    if not isinstance(key, dict):
        return None
    model = key.get("model")
    return str(model) if model else None  # the benchmark makes a file name of it; records keep it as is


def _timestamp(manifest: dict[str, Any]) -> float:
    """When the answers were made (their manifest's `finished_at`), as the official files' `tstamp`."""
    from datetime import datetime

    stamp = manifest.get("finished_at")
    if not stamp:
        return 0.0
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _write_index(out: Path, run_dir: Path, results: RunResults, exported: list[RowExport]) -> None:
    index = {"run_dir": str(run_dir.resolve()), "experiment": results.experiment_name,
             "experiment_hash": results.experiment_hash,
             "rows": [{"row": e.row, "seed": e.seed, "folder": e.folder, "files": e.files, "skipped": e.skipped}
                      for e in exported]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
