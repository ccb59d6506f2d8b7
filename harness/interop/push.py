"""`pad-harness export ... --push-to-hub REPO`: what of an export goes to the hub, and with which card.

One row exported with `--format model` is a model: its directory is pushed as the repo's root (loadable
with `from_pretrained(REPO)`), with a model card stating teacher, method, budget, settings and scores.
Anything else is pushed as the export folder itself, with a card listing its rows and files.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.interop.export import MODEL_FORMAT, RowExport, load_results


def push_export(run_dir: Path, out: Path, exported: list[RowExport], repo: str, private: bool = False) -> str:
    from harness.interop.hub import model_card, push_folder

    results = load_results(run_dir)
    token = os.environ.get("HF_TOKEN")
    if len(exported) == 1 and set(exported[0].files) == {MODEL_FORMAT}:
        only = exported[0]
        row = next(r for r in results.rows if r.row == only.row and r.seed == only.seed)
        return push_folder(out / only.folder / "model", repo, card=model_card(results, row), token=token,
                           private=private)
    return push_folder(out, repo, card=export_card(results.experiment_name, results.experiment_hash, exported),
                       token=token, private=private)


def export_card(experiment: str, experiment_hash: str, exported: list[RowExport]) -> str:
    """The README of a pushed export: what it holds, row by row."""
    lines = ["---", "tags: [pad-harness, distillation, leaderboard]", "---", "",
             f"# pad-harness export: {experiment}", "",
             f"Experiment hash `{experiment_hash}`. Written by `pad-harness export`: one folder per leaderboard "
             f"row, each benchmark's answers and judgements in its official tool's format, and each trained "
             f"student's model directory under `model/`.", "", "| Row | Folder | Exported | Skipped |",
             "|---|---|---|---|"]
    for row in exported:
        lines.append(f"| {row.row} | `{row.folder}` | {', '.join(sorted(row.files)) or '-'} | "
                     f"{', '.join(sorted(row.skipped)) or '-'} |")
    return "\n".join(lines) + "\n"
