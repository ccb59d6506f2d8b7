"""TensorBoard: `RUN_DIR/tensorboard/<experiment>/` with one subdir per row (`tensorboard --logdir` on it).

Per row: every score as a scalar at step 0 (`benchmark/metric`), and as text the config, the leaderboard
(LEADERBOARD.md), the tuning trials where the row was tuned and the answer samples. A row's subdir is
written anew each time, so a rerun replaces what it holds instead of adding a second copy beside it.
"""

from __future__ import annotations

import shutil
from typing import Any

from harness.interop.export import safe_name
from harness.tracking.base import Table, TrackedRow, TrackedRun, Tracker


class TensorBoardTracker(Tracker):
    flag = "tensorboard"
    package = "tensorboard"

    def record(self, run: TrackedRun) -> str:
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        root = run.run_dir / "tensorboard" / safe_name(run.experiment_name)
        for row in run.rows:
            log_dir = root / row.name
            shutil.rmtree(log_dir, ignore_errors=True)
            writer = SummaryWriter(log_dir=str(log_dir))
            try:
                _write_row(writer, run, row)
            finally:
                writer.close()
        return str(root)


def _write_row(writer: Any, run: TrackedRun, row: TrackedRow) -> None:
    for key, value in row.scores.items():
        writer.add_scalar(key, value, 0)
    header = (f"**{row.name}** ({row.kind}) of experiment `{run.experiment_name}` (hash `{run.experiment_hash}`), "
              f"run dir `{run.run_dir}`\n\n")
    config = Table(["key", "value"], [[k, v] for k, v in row.config.items()])
    writer.add_text("config", header + config.markdown(), 0)
    writer.add_text("leaderboard", run.leaderboard_markdown, 0)
    if row.tuning is not None:
        writer.add_text("tuning", row.tuning.markdown(), 0)
    writer.add_text("answer_samples", row.answer_samples.markdown(), 0)
