"""Weights & Biases: one run per row in `logging.wandb_project`, grouped by experiment (name + hash).

Per row: the config (method, params, optimizer settings, seed, tuning status), every score in the run's
summary (`benchmark/metric`), and the tables `leaderboard`, `tuning` (tuned rows) and `answer_samples`.
The run id is derived from what the row holds, so a rerun with the same results resumes the same run
instead of adding a duplicate, and a changed row is a new run. `WANDB_MODE=offline` needs no login; files
go to `WANDB_DIR`, else the run dir.
"""

from __future__ import annotations

import os
from typing import Any

from harness.tracking.base import Table, TrackedRow, TrackedRun, Tracker


class WandbTracker(Tracker):
    flag = "wandb"
    package = "wandb"

    def record(self, run: TrackedRun) -> str:
        import wandb

        directory = os.environ.get("WANDB_DIR") or str(run.run_dir)
        for row in run.rows:
            wb_run = wandb.init(project=self.config.wandb_project, name=row.name, group=run.group,
                                job_type=row.kind, tags=[row.kind, run.experiment_name[:64]], id=row.digest,
                                resume="allow", dir=directory, reinit="create_new",  # beside a caller's own run
                                config={**row.config, "experiment": run.experiment_name,
                                        "experiment_hash": run.experiment_hash},
                                settings=wandb.Settings(console="off", silent=True))
            try:
                _write_row(wandb, wb_run, run, row)
            finally:
                wb_run.finish()
        return f"project {self.config.wandb_project!r}, group {run.group!r} ({directory})"


def _write_row(wandb: Any, wb_run: Any, run: TrackedRun, row: TrackedRow) -> None:
    wb_run.summary.update(row.scores)
    tables = {"leaderboard": run.leaderboard, "answer_samples": row.answer_samples}
    if row.tuning is not None:
        tables["tuning"] = row.tuning
    wb_run.log({name: _wandb_table(wandb, table) for name, table in tables.items()})


def _wandb_table(wandb: Any, table: Table) -> Any:
    # allow_mixed_types: a column may hold numbers and gaps (None) or, in the samples, text and numbers.
    return wandb.Table(columns=table.columns, data=table.rows, allow_mixed_types=True)
