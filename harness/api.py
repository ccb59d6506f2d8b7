"""The Python API: everything `pad-harness` does, from a notebook or a script (docs/python-api.md).

    from harness import api

    exp = api.load("leaderboards/tiny.yaml", overrides=["budget.max_steps=1"])
    print(api.plan(exp, "runs/tiny"))          # each stage cached or to run
    results = api.run(exp, "runs/tiny")        # runs what is missing
    results.frame()                            # long format: row, method, seed, benchmark, metric, value, CI
    api.report(["runs/tiny", "runs/other"], out="runs/merged")

The command line is a thin layer over these functions: `pad-harness run` is `load` + `run`, `validate` is
`load` + `validate`, `--dry-run` is `plan` (+ `estimate`), `report` and `export` are theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import Experiment, load_experiment, parse_experiment
from harness.results import RunResults

if TYPE_CHECKING:
    import pandas as pd

    from harness.interop.export import RowExport
    from harness.report.leaderboard import Leaderboard

FRAME_COLUMNS = ["row", "kind", "method", "seed", "benchmark", "metric", "value", "se", "ci_low", "ci_high",
                 "headline", "higher_is_better"]


def load(source: str | Path | dict[str, Any] | Experiment, overrides: Sequence[str] = ()) -> Experiment:
    """An experiment from a YAML file (its `extends:` chain applied), a dict (as the YAML would hold it) or
    the schema classes, with `--set`-style overrides ("budget.learning_rate=2e-5", list entries by name or
    label); validated by the schema, one-line `ConfigError`s as on the command line."""
    if isinstance(source, (str, Path)):
        return load_experiment(source, tuple(overrides))
    from harness.config_layers import apply_overrides

    data = source.model_dump(mode="json") if isinstance(source, Experiment) else dict(source)
    label = "<experiment>" + (f" (with --set {' '.join(overrides)})" if overrides else "")
    exp = parse_experiment(apply_overrides(data, tuple(overrides)), label)
    exp._origin = {"file": None, "extends": [], "overrides": list(overrides)}
    return exp


def validate(exp: Experiment) -> None:
    """What would fail hours into a run (keys, lengths, data, judges), raised now as one `ConfigError`."""
    from harness.preflight import preflight

    preflight(exp, exp.origin.get("file") or exp.name)


def _run_dir(exp: Experiment, run_dir: str | Path | None) -> Path:
    return Path(run_dir) if run_dir is not None else exp.run_dir()


def plan(exp: Experiment, run_dir: str | Path | None = None) -> str:
    """The plan as `--dry-run` prints it: each stage cached or to run, the judge of each benchmark."""
    from harness.pipeline import Pipeline

    return Pipeline(exp, _run_dir(exp, run_dir), progress=False).describe_plan()


def estimate(exp: Experiment, on: str, run_dir: str | Path | None = None) -> str:
    """`--dry-run --estimate-on ON`: tokens, FLOPs and device-hours per stage on accelerator `on`."""
    from harness.estimate import estimate_plan, format_estimate
    from harness.pipeline import Pipeline

    pipe = Pipeline(exp, _run_dir(exp, run_dir), progress=False)
    return format_estimate(estimate_plan(pipe.build_plan(project_selections=True), pipe.ctx, on))


def run(exp: Experiment, run_dir: str | Path | None = None, progress: bool = True,
        ignore_memory_plan: bool = False, on_start: Callable[[], None] | None = None) -> Results:
    """Run what is missing (everything finished is reused) and write the reports; the results.
    A train stage estimated not to fit in the device's memory stops the run before any work
    (harness.estimate.gate) unless `ignore_memory_plan`. `on_start` is called once the run is set up (the
    experiment's models identified, its tuning checked) and about to start, on the main process of a launch
    only (`pad-harness run` announces the run there)."""
    from harness.pipeline import Pipeline

    where = _run_dir(exp, run_dir)
    # The file names the experiment in messages; a layered one's resolved text is what the run directory keeps.
    pipe = Pipeline(exp, where, source_file=exp.origin.get("file"), progress=progress,
                    ignore_memory_plan=ignore_memory_plan)
    if on_start is not None and pipe.processes.is_main:
        on_start()
    raw = pipe.run()
    return Results(raw, where, dict(pipe.report_paths), timings=dict(pipe.timings),
                   engine_starts=pipe.engines.starts, main_process=pipe.processes.is_main)


def results(run_dir: str | Path) -> Results:
    """A finished run's results (its `results.json`)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        from harness.errors import HarnessError

        raise HarnessError(f"{run_dir}: no results.json; run the experiment first (api.run or pad-harness run)")
    return Results(RunResults.load(path), Path(run_dir), {})


def report(run_dirs: Sequence[str | Path], out: str | Path | None = None, proposed: Sequence[str] | None = None,
           paper_dirs: Sequence[str | Path] = (), n_boot: int = 10_000, seed: int = 0) -> dict[str, Path]:
    """Regenerate one run's reports, or merge several runs' rows into one leaderboard (`pad-harness report`)."""
    import argparse

    from harness.report.merge import run_report

    args = argparse.Namespace(run_dirs=[Path(d) for d in run_dirs], out=Path(out) if out else None,
                              paper_dir=[Path(p) for p in paper_dirs], proposed=list(proposed) if proposed else None,
                              n_boot=n_boot, seed=seed)
    return run_report(args)


def export(run_dir: str | Path, out: str | Path, rows: Sequence[str] | None = None,
           formats: Sequence[str] | None = None) -> list[RowExport]:
    """`pad-harness export`: answers, judgements and students in the official formats."""
    from harness.interop.export import export_run

    return export_run(Path(run_dir), Path(out), list(rows) if rows else None, list(formats) if formats else None)


@dataclass
class Results:
    """A run's results: `raw` (harness.results.RunResults, as results.json holds it) and ways to read it."""

    raw: RunResults
    run_dir: Path
    report_paths: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "total", and per step "kind:label"
    engine_starts: int = 0  # generation engines (vLLM) the run started
    # False in a worker process of a launch (`torchrun`, `accelerate launch`): the main process writes the reports.
    main_process: bool = True

    @property
    def rows(self) -> list[Any]:
        return list(self.raw.rows)

    def leaderboard(self) -> Leaderboard:
        """The leaderboard the reports show (means over seeds, intervals, comparisons)."""
        from harness.report.leaderboard import build_leaderboard

        return build_leaderboard(self.raw)

    def records(self) -> list[dict[str, Any]]:
        """One record per (row, seed, benchmark, metric): the value, its standard error and 95% interval
        where the benchmark gives them (its own interval, else value ± 1.96 SE), whether it is the
        benchmark's headline and which way is better. A metric that is another's SE or interval bound is
        not a record of its own."""
        from harness.report.leaderboard import columns_for

        columns = {(c.benchmark, name): c for c in columns_for(self.raw) if c.benchmark
                   for name in c.metric_names}
        out = []
        for row in self.raw.rows:
            for bench, result in row.benchmarks.items():
                helpers = {name for (b, _), c in columns.items() if b == bench
                           for name in (*c.se_names, *(c.ci_metrics or ()))}
                for metric, value in result.metrics.items():
                    if metric in helpers or value is None or not _is_number(value):
                        continue
                    out.append(_record(row, bench, metric, float(value), result.metrics,
                                       columns.get((bench, metric))))
        return out

    def frame(self) -> pd.DataFrame:
        """`records()` as a pandas DataFrame (long format; pivot it as you need)."""
        import pandas as pd

        return pd.DataFrame(self.records(), columns=FRAME_COLUMNS)


def _record(row: Any, bench: str, metric: str, value: float, metrics: dict[str, Any], col: Any) -> dict[str, Any]:
    se = next((float(metrics[n]) for n in (col.se_names if col else ()) if _is_number(metrics.get(n))), None)
    low = high = None
    if col is not None and col.ci_metrics and all(_is_number(metrics.get(n)) for n in col.ci_metrics):
        low, high = (float(metrics[n]) for n in col.ci_metrics)
    elif se is not None:
        low, high = value - 1.96 * se, value + 1.96 * se
    return {"row": row.row, "kind": row.kind, "method": row.method, "seed": row.seed, "benchmark": bench,
            "metric": metric, "value": value, "se": se, "ci_low": low, "ci_high": high,
            "headline": bool(col is not None and col.headline),
            "higher_is_better": col.higher_is_better if col is not None else True}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
