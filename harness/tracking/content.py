"""`TrackedRun` from a run's results and its written reports: what every tracker records of every row."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import harness.report.tuning as report_tuning
from harness.results import RowResult, RunResults
from harness.tracking.base import Table, TrackedRow, TrackedRun
from harness.tracking.names import row_run_names
from harness.tracking.samples import answer_samples


def tracked_run(results: RunResults, run_dir: Path, report_paths: dict[str, Path]) -> TrackedRun:
    """`report_paths`: what `write_reports` wrote (the leaderboard is read back from its CSV and Markdown, so
    the trackers hold the very table the run dir holds)."""
    run_dir = Path(run_dir)
    names = row_run_names(results.rows)
    rows = [_tracked_row(results, row, name, run_dir) for row, name in zip(results.rows, names, strict=True)]
    leaderboard_csv = Path(report_paths["csv"]).read_text(encoding="utf-8")
    return TrackedRun(results.experiment_name, results.experiment_hash, run_dir,
                      leaderboard=_csv_table(leaderboard_csv), leaderboard_csv=leaderboard_csv,
                      leaderboard_markdown=Path(report_paths["markdown"]).read_text(encoding="utf-8"),
                      rows=rows)


def _tracked_row(results: RunResults, row: RowResult, name: str, run_dir: Path) -> TrackedRow:
    scores = row_scores(row)
    config = row_config(results, row)
    selection = results.tuning.get(row.row) if row.tuning.get("tuned") else None
    tuning = Table(list(report_tuning.TRIALS_HEADER), report_tuning.trial_lines(selection)) if selection else None
    identity = json.dumps({"experiment_hash": results.experiment_hash, "name": name, "scores": scores,
                           "config": config}, sort_keys=True, default=str)
    return TrackedRow(name=name, label=row.row, kind=row.kind, scores=scores, config=config, tuning=tuning,
                      answer_samples=answer_samples(row, run_dir),
                      digest=hashlib.sha256(identity.encode()).hexdigest()[:32])


def row_scores(row: RowResult) -> dict[str, float]:
    """Every finite numeric metric of every benchmark, as `benchmark/metric`."""
    return {f"{bench}/{metric}": float(value)
            for bench, result in sorted(row.benchmarks.items())
            for metric, value in sorted(result.metrics.items())
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


def row_config(results: RunResults, row: RowResult) -> dict[str, Any]:
    """What the row is and how it trained, flat: kind, model, method, seed, the method's params (with the
    settings its tuning selected), its optimizer settings, its tuning status, an external row's origin."""
    config: dict[str, Any] = {"row": row.row, "kind": row.kind, "model": row.model}
    if row.method is not None:
        config["method"] = row.method
    if row.seed is not None:
        config["seed"] = row.seed
    entry = _method_entry(results, row.row) if row.kind == "method" else {}
    params = dict(entry.get("params") or {})
    selected = row.tuning.get("selected_settings") or {}
    params.update({key.partition(".")[2]: v for key, v in selected.items() if key.startswith("params.")})
    config.update(_flat("params", params))
    config.update(_flat("optimizer", row.optimizer))
    if row.kind == "method":
        config["tuning.status"] = report_tuning.tuning_status([row])
    config.update(_flat("tuning", {k: v for k, v in row.tuning.items() if k != "selected_settings"}))
    config.update({f"tuning.selected.{k}": v for k, v in selected.items()})
    config.update(_flat("external", row.external))
    return config


def _method_entry(results: RunResults, label: str) -> dict[str, Any]:
    for entry in results.experiment.get("methods") or []:
        if isinstance(entry, dict) and (entry.get("label") or entry.get("name")) == label:
            return entry
    return {}


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(f"{prefix}.{key}", inner))
        return out
    if isinstance(value, list | tuple):
        return {prefix: json.dumps(value, default=str)}
    return {prefix: value}


def _csv_table(text: str) -> Table:
    """The leaderboard CSV with its numbers as numbers (a column with any text stays text)."""
    header, *lines = list(csv.reader(io.StringIO(text, newline="")))
    numeric = [all(_is_number(line[i]) for line in lines if line[i] != "") for i in range(len(header))]
    rows = [[None if cell == "" else float(cell) if numeric[i] else cell for i, cell in enumerate(line)]
            for line in lines]
    return Table(header, rows)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
