"""What every tracker records, and the one interface each tracker implements.

`TrackedRun` is the whole run as the trackers see it (built once by harness.tracking.content, shared by all):
per leaderboard row one `TrackedRow` (its run name, scores, config, tuning table, answer samples), plus the
leaderboard itself. A tracker only translates that into its library's calls, so the three stay alike.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.config import LoggingConfig


@dataclass(frozen=True)
class Table:
    """A small table of plain values (str, float, None), rendered as each tracker wants it."""

    columns: list[str]
    rows: list[list[Any]]

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([["" if v is None else v for v in row] for row in self.rows])
        return buf.getvalue()

    def markdown(self) -> str:
        def cell(value: Any) -> str:
            return "" if value is None else str(value).replace("|", "\\|").replace("\n", "<br>")

        lines = ["| " + " | ".join(cell(c) for c in self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class TrackedRow:
    """One leaderboard row (teacher, untrained student, a method's seed, an external row): one tracker run."""

    name: str  # its label, `-seed<k>` where the label has several seeds (as `pad-harness export` names it)
    label: str  # the leaderboard row it belongs to (seeds of a method share it)
    kind: str  # teacher | student | method | external
    scores: dict[str, float]  # "benchmark/metric" -> value: every numeric metric the row scored
    config: dict[str, Any]  # flat: kind, model, method, seed, params.*, optimizer.*, tuning.*, external.*
    tuning: Table | None  # the trials of the selection that chose its settings (tuned methods only)
    answer_samples: Table  # a few items per benchmark: prompt, answer, score, verdict
    digest: str  # what the row holds (scores and config): the same digest is the same tracker run


@dataclass(frozen=True)
class TrackedRun:
    experiment_name: str
    experiment_hash: str
    run_dir: Path
    leaderboard: Table  # leaderboard.csv: one line per leaderboard row (seeds aggregated)
    leaderboard_csv: str  # the file itself, as the run dir holds it
    leaderboard_markdown: str  # LEADERBOARD.md: the whole report as Markdown
    rows: list[TrackedRow] = field(default_factory=list)

    @property
    def group(self) -> str:
        """The experiment's runs together: its name and the hash of what must match to compare them (within
        the 128 characters W&B allows a group)."""
        return f"{self.experiment_name[:110]}-{self.experiment_hash[:8]}"


class Tracker(ABC):
    """One tracking backend. `record` writes one run per row; a missing package raises ImportError (the
    caller turns it into one warning), anything else it raises is reported and the run goes on."""

    flag: ClassVar[str]  # the `logging:` key that turns it on
    package: ClassVar[str]  # what to `pip install` for it

    def __init__(self, config: LoggingConfig) -> None:
        self.config = config

    @abstractmethod
    def record(self, run: TrackedRun) -> str:
        """Record every row of `run`; returns where the runs went (a path, a URI, a project)."""
