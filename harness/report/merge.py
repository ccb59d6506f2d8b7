"""`pad-harness report RUN_DIR...`: regenerate one run's reports, or merge several runs into one leaderboard.

Runs may share a leaderboard only when everything that decides the comparison matches: teacher, student,
prompts, sampling, signals, the budget's result fields, benchmarks with each one's judge (what changes its
verdicts), the backends' result params: one definition, `harness.stages.comparable`, recorded in each
results.json (`comparable`) and hashed into `experiment_hash`. Methods and seeds may differ: that is the point of merging
(a new plugin's run added to an existing leaderboard, or more seeds). Anything else is refused with a
message that names what differs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.html import write_html
from harness.report.leaderboard import build_leaderboard
from harness.report.paper import find_reference
from harness.report.samples import build_samples
from harness.report.writers import write_csv, write_json, write_markdown
from harness.results import MAY_DIFFER_BETWEEN_MERGED_RUNS, RowResult, RunResults
from harness.store import canonical_json

MAY_DIFFER = MAY_DIFFER_BETWEEN_MERGED_RUNS  # the keys harness.stages.comparable leaves out
REPORT_FILES = {
    "json": "leaderboard.json",
    "csv": "leaderboard.csv",
    "markdown": "LEADERBOARD.md",
    "html": "report.html",
}


class MergeError(HarnessError):
    """Runs that cannot share one leaderboard, or a run directory without results."""


def _short(value: Any, limit: int = 80) -> str:
    text = canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def experiment_differences(a: dict[Any, Any], b: dict[Any, Any], prefix: str = "") -> list[str]:
    """Human-readable differences in the parts of two experiments that must match."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):  # names of an object, or positions in a list (never mixed)
        if not prefix and key in MAY_DIFFER:
            continue
        va, vb = a.get(key), b.get(key)
        if canonical_json(va) == canonical_json(vb):
            continue
        where = f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += experiment_differences(va, vb, f"{where}.")
        elif isinstance(va, list) and isinstance(vb, list) and len(va) == len(vb):  # benchmarks: item by item
            out += experiment_differences(dict(enumerate(va)), dict(enumerate(vb)), f"{where}.")
        else:
            out.append(f"{where}: {_short(va)} vs {_short(vb)}")
    return out


def check_compatible(
    base: RunResults, other: RunResults, base_name: str = "first run", other_name: str = "other run"
) -> None:
    # What must match, as each run recorded it; results written before it was recorded: their experiments.
    both = bool(base.comparable and other.comparable)
    diffs = experiment_differences(*((base.comparable, other.comparable) if both else (base.experiment, other.experiment)))
    if diffs:
        raise MergeError(
            f"cannot merge {other_name} into {base_name}: their experiments differ in "
            + "; ".join(diffs)
            + ". Only methods and seeds may differ between merged runs."
        )
    if base.experiment_hash != other.experiment_hash:
        raise MergeError(
            f"cannot merge {other_name} into {base_name}: experiment_hash {other.experiment_hash} "
            f"!= {base.experiment_hash} although the recorded experiments agree; the runs were "
            "probably made by different harness versions. Re-run one of them."
        )


def _same_row(a: RowResult, b: RowResult) -> bool:
    return canonical_json(asdict(a)) == canonical_json(asdict(b))


def _add_rows(seen: dict[tuple[str, int | None], RowResult], run: RunResults, name: str) -> list[RowResult]:
    """The rows of `run` not in `seen` (which they join). A method row already there must be the same
    row: two different results under one (row, seed) would make the leaderboard pick one silently."""
    added = []
    for r in run.rows:
        prior = seen.get((r.row, r.seed))
        if prior is None:
            added.append(r)
            seen[(r.row, r.seed)] = r
        elif r.kind == "method" and not _same_row(prior, r):
            raise MergeError(
                f"cannot merge {name}: row {r.row!r} seed {r.seed} is also in an earlier run "
                "with different results; drop one of the two runs or relabel the method"
            )
    return added


def _origin(run: RunResults, name: str) -> dict[str, Any]:
    """What the merged provenance records of one source run."""
    return {"run": name, "experiment_name": run.experiment_name, "rows": sorted({r.row for r in run.rows})}


def merge_results(runs: Sequence[RunResults], names: Sequence[str] | None = None) -> RunResults:
    """Merge in memory. The first run is the base: its teacher and untrained-student rows are kept (every
    run evaluates them; under matching experiments they answer the same prompts with the same models)."""
    if not runs:
        raise MergeError("nothing to merge: give at least one run")
    names = list(names or [f"run {i + 1}" for i in range(len(runs))])
    if len(names) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(names)} names")
    base = runs[0]
    rows = list(base.rows)
    seen = {(r.row, r.seed): r for r in rows}
    methods = list(base.experiment.get("methods") or [])
    seeds = list(base.experiment.get("seeds") or [])
    merged_from = []
    tuning = dict(base.tuning)
    for run, name in zip(runs[1:], names[1:], strict=True):
        check_compatible(base, run, names[0], name)
        rows += _add_rows(seen, run, name)
        tuning.update({row: sel for row, sel in run.tuning.items() if row not in tuning})
        for m in run.experiment.get("methods") or []:
            if canonical_json(m) not in {canonical_json(x) for x in methods}:
                methods.append(m)
        seeds += [s for s in run.experiment.get("seeds") or [] if s not in seeds]
        merged_from.append({**_origin(run, name), "provenance": run.provenance})
    if len(runs) == 1:
        return base
    experiment = {**base.experiment, "methods": methods, "seeds": seeds}
    provenance = {**base.provenance, "merged_from": [_origin(base, names[0]), *merged_from]}
    return replace(base, experiment=experiment, rows=rows, provenance=provenance, tuning=tuning)


def _results_path(run_dir: Path) -> Path:
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.exists():
        raise MergeError(f"{path}: not found, so no results.json there; give a run directory (or its results.json)")
    candidate = path / "results.json"
    if not candidate.is_file():
        raise MergeError(
            f"{path}: no results.json there; run the experiment first (`pad-harness run FILE`) "
            "or give the run directory it wrote"
        )
    return candidate


def merge_runs(run_dirs: Sequence[Path]) -> RunResults:
    """Load `results.json` from each run directory and merge them (one directory: just load it)."""
    paths = [_results_path(Path(d)) for d in run_dirs]
    return merge_results([load_results(p) for p in paths], [str(p.parent) for p in paths])


def load_results(path: Path) -> RunResults:
    """One results file, or one `MergeError` that says what is wrong with it and what to do."""
    redo = "rerun the experiment (`pad-harness run FILE`) to write it again, or give another run directory"
    if not path.read_bytes().strip():
        raise MergeError(f"{path}: the results file is empty (the run that wrote it did not finish?); {redo}")
    try:
        results = RunResults.load(path)
    except UnicodeDecodeError:
        raise MergeError(f"{path}: not UTF-8 text, so not a results file pad-harness wrote; {redo}") from None
    except json.JSONDecodeError as exc:
        raise MergeError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}), the file is damaged; {redo}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise MergeError(f"{path}: not a results file written by pad-harness ({type(exc).__name__}: {exc}); "
                         f"{redo}") from None
    if not results.rows:
        raise MergeError(f"{path}: holds no results (0 rows); {redo}")
    return results


def write_reports(
    results: RunResults | list[RunResults],
    out_dir: Path,
    *,
    paper_dirs: Sequence[Path] | None = None,
    proposed: Sequence[str] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    run_dirs: Sequence[Path] | None = None,
) -> dict[str, Path]:
    """Write leaderboard.json, leaderboard.csv, LEADERBOARD.md and report.html into `out_dir`. `proposed`:
    see `build_leaderboard` (None: the methods whose class is `proposed`). `run_dirs`: where the rows'
    artifact paths start, for report.html's sample viewer (default: `out_dir`, a run's own directory)."""
    merged = merge_results(results) if isinstance(results, list) else results
    lb = build_leaderboard(merged, proposed=proposed, n_boot=n_boot, seed=seed)
    reference = find_reference(merged.experiment_name, paper_dirs)
    lb.paper = reference.to_json() if reference else None
    out_dir = Path(out_dir)
    return {
        "json": write_json(lb, out_dir / REPORT_FILES["json"]),
        "csv": write_csv(lb, out_dir / REPORT_FILES["csv"]),
        "markdown": write_markdown(lb, out_dir / REPORT_FILES["markdown"]),
        "html": write_html(lb, out_dir / REPORT_FILES["html"], build_samples(merged, run_dirs or [out_dir])),
    }


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `pad-harness report`, for the CLI module to mount as a subcommand."""
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (or results.json files)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the reports (default: the run directory; with several runs, "
        "FIRST_RUN_DIR/merged)",
    )
    parser.add_argument(
        "--proposed",
        nargs="*",
        default=None,
        help="methods compared against the best baseline rather than counted as baselines (default: the "
        "methods that declare themselves proposed; `--proposed` alone: none)",
    )
    parser.add_argument(
        "--paper-dir",
        type=Path,
        action="append",
        default=None,
        help="directory of paper reference files (default: leaderboards/paper)",
    )
    parser.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return parser


def run_report(args: argparse.Namespace) -> dict[str, Path]:
    results = merge_runs(args.run_dirs)
    first = args.run_dirs[0] if args.run_dirs[0].is_dir() else args.run_dirs[0].parent
    out = args.out or (first if len(args.run_dirs) == 1 else first / "merged")
    if len(args.run_dirs) > 1:
        results.save(Path(out) / "results.json")  # so the merged leaderboard can itself be re-reported
    run_dirs = [d if d.is_dir() else d.parent for d in args.run_dirs]
    return write_reports(results, out, paper_dirs=args.paper_dir, proposed=args.proposed, n_boot=args.n_boot,
                         seed=args.seed, run_dirs=run_dirs)
