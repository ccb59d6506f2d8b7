"""Results where people track them: Weights & Biases, TensorBoard, MLflow (`logging:` in the experiment).

Once a run's reports are written, every tracker turned on gets one run per leaderboard row (teacher,
untrained student, each method x seed, external rows), named by the row's label (`pad`, `pad-seed1`) and
grouped by experiment, holding the row's scores, its config, the leaderboard, the tuning trials where it
was tuned and a few answers per benchmark (harness.tracking.base says what; one module per tracker says
how). A tracker whose package is missing is one warning and the run goes on, as for the training logs
(harness.training.logging): a tracking extra must never cost a finished run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.config import LoggingConfig
from harness.results import RunResults
from harness.tracking.base import Table, TrackedRow, TrackedRun, Tracker
from harness.tracking.mlflow_tracker import MlflowTracker
from harness.tracking.tensorboard_tracker import TensorBoardTracker
from harness.tracking.wandb_tracker import WandbTracker

__all__ = ["TRACKERS", "Table", "TrackedRow", "TrackedRun", "Tracker", "enabled_trackers", "track_run"]

log = logging.getLogger("harness.tracking")

TRACKERS: tuple[type[Tracker], ...] = (WandbTracker, TensorBoardTracker, MlflowTracker)


def enabled_trackers(config: LoggingConfig) -> list[Tracker]:
    return [cls(config) for cls in TRACKERS if getattr(config, cls.flag)]


def track_run(results: RunResults, run_dir: Path, config: LoggingConfig | None,
              report_paths: dict[str, Path]) -> list[str]:
    """Send the run's results to every tracker `config` turns on; returns the warnings it gave (each also
    logged). Call it on the main process, after the reports are written (`report_paths`)."""
    trackers = enabled_trackers(config) if config is not None else []
    if not trackers:
        return []
    from harness.tracking.content import tracked_run

    notes: list[str] = []
    try:
        run = tracked_run(results, Path(run_dir), report_paths)
    except Exception as exc:  # a damaged artifact must not cost the finished run its reports
        notes.append(f"tracking: could not gather the results to send ({type(exc).__name__}: {exc}); "
                     f"the reports in {run_dir} are complete")
    else:
        for tracker in trackers:
            note = _record(tracker, run)
            if note:
                notes.append(note)
    for note in notes:
        log.warning(note)
    return notes


def _record(tracker: Tracker, run: TrackedRun) -> str | None:
    try:
        where = tracker.record(run)
    except ImportError as exc:
        return (f"logging.{tracker.flag} is on but the `{tracker.package}` package is not installed "
                f"(pip install {tracker.package}): {exc}; the results are still in {run.run_dir}")
    except Exception as exc:  # no login, no server, a full disk: say so, keep the run
        hint = " (run `wandb login` or set WANDB_MODE=offline)" if tracker.flag == "wandb" else ""
        return (f"{tracker.flag} could not record the results ({type(exc).__name__}: {exc}){hint}; "
                f"the results are still in {run.run_dir}")
    log.info("%s: %d rows recorded in %s", tracker.flag, len(run.rows), where)
    return None
