"""Run names: a row's label, with `-seed<k>` where the label has several seeds (`pad`, `pad-seed1`).

The same names as `pad-harness export`'s folders (harness.interop.export.row_folders), so a row is called
the same in the export, in its training logs and in every tracker.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.interop.export import row_folders, safe_name
from harness.results import RowResult


def row_run_names(rows: list[RowResult]) -> list[str]:
    """Each row's run name, in the order of `rows`."""
    names = row_folders(rows)
    return [names[i] for i in range(len(rows))]


def training_run_name(label: str, seed: int, seeds: Sequence[int]) -> str:
    """The run name of a method row's training: every seed of the experiment trains that row."""
    return safe_name(label if len(set(seeds)) == 1 else f"{label}-seed{seed}")
