"""MLflow: one MLflow experiment per experiment name, one run per row, the experiment hash as a tag.

Per row: params (method, params, optimizer settings, seed, tuning status), every score as a metric
(`benchmark/metric`), tags (`pad_harness.*`: experiment hash, row, kind, run dir) and artifacts:
`leaderboard/leaderboard.csv` + `LEADERBOARD.md`, `tuning/trials.csv` + `.md` (tuned rows), and
`answer_samples.json` + `.md`. A rerun with the same results reuses the run (tag `pad_harness.digest`) and
only rewrites its artifacts; a changed row is a new run.

Where: `logging.mlflow_tracking_uri`, else `MLFLOW_TRACKING_URI`, else a file store in `RUN_DIR/mlruns`
(`mlflow ui --backend-store-uri RUN_DIR/mlruns`). Recent MLflow refuses file stores unless
`MLFLOW_ALLOW_FILE_STORE` is set: it is set while this tracker writes to the default store only.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.tracking.base import TrackedRow, TrackedRun, Tracker

TAG = "pad_harness"
PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value
BATCH = 100  # MLflow takes at most 100 params (and 1000 metrics) per log_batch call


class MlflowTracker(Tracker):
    flag = "mlflow"
    package = "mlflow-skinny"

    def record(self, run: TrackedRun) -> str:
        from mlflow.tracking import MlflowClient

        uri = self.config.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            (run.run_dir / "mlruns").resolve().as_uri()
        with _file_store_allowed(uri):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, run)
            for row in run.rows:
                _record_row(client, experiment_id, run, row)
        return uri


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 keeps its file store in maintenance mode and refuses it unless told otherwise; the default
    here is a file store because it needs no database package and lives inside the run dir."""
    if not uri.startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _experiment_id(client: Any, run: TrackedRun) -> str:
    experiment = client.get_experiment_by_name(run.experiment_name)
    if experiment is None:
        return str(client.create_experiment(run.experiment_name, tags={f"{TAG}.experiment": run.experiment_name}))
    if experiment.lifecycle_stage == "deleted":  # a deleted name still blocks creating it again
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def _record_row(client: Any, experiment_id: str, run: TrackedRun, row: TrackedRow) -> None:
    from mlflow.entities import Metric, Param

    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG}.digest` = '{row.digest}'",
                               max_results=1)
    if found:  # the same row already tracked: its params and metrics are these; refresh the artifacts
        run_id = found[0].info.run_id
    else:
        tags = {f"{TAG}.experiment_hash": run.experiment_hash, f"{TAG}.row": row.label, f"{TAG}.kind": row.kind,
                f"{TAG}.run_dir": str(run.run_dir), f"{TAG}.digest": row.digest}
        run_id = client.create_run(experiment_id, run_name=row.name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        params = [Param(_key(k), str(v)[:PARAM_VALUE_LIMIT]) for k, v in row.config.items()]
        metrics = [Metric(_key(k), v, now, 0) for k, v in row.scores.items()]
        for start in range(0, max(len(params), len(metrics)), BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + BATCH], params=params[start:start + BATCH])
    client.log_text(run_id, run.leaderboard_csv, "leaderboard/leaderboard.csv")
    client.log_text(run_id, run.leaderboard_markdown, "leaderboard/LEADERBOARD.md")
    if row.tuning is not None:
        client.log_text(run_id, row.tuning.csv_text(), "tuning/trials.csv")
        client.log_text(run_id, row.tuning.markdown(), "tuning/trials.md")
    client.log_dict(run_id, {"columns": row.answer_samples.columns, "rows": row.answer_samples.records()},
                    "answer_samples.json")
    client.log_text(run_id, row.answer_samples.markdown(), "answer_samples.md")
    client.set_terminated(run_id)


def _key(name: str) -> str:
    """A param or metric name MLflow accepts (letters, digits and `_-. /:` only)."""
    return re.sub(r"[^\w\-. /:]", "_", name)
