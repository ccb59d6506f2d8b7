"""`pad-harness` command line: run, validate, list plugins, score official judgement files, report, export."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harness import console
from harness.errors import HarnessError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENT = "leaderboards/smol.yaml"
SET_HELP = ("override one key (repeatable): dotted path, list entries by name or label, value as YAML; e.g. "
            "--set budget.learning_rate=2e-5 --set methods.dpo.params.beta=0.05 (harness/config_layers.py)")


def _default_experiment() -> Path:
    for candidate in (Path.cwd() / DEFAULT_EXPERIMENT, REPO_ROOT / DEFAULT_EXPERIMENT):
        if candidate.is_file():
            return candidate
    raise HarnessError(f"no experiment file given and {DEFAULT_EXPERIMENT} not found; pass one: pad-harness run FILE")


def cmd_run(args: argparse.Namespace) -> int:
    """`load` + `validate` + `run` of the Python API (harness.api), with what the command line prints."""
    from harness import api

    if args.estimate_on is not None:
        if not args.dry_run:
            raise HarnessError(f"--estimate-on prices the plan without running it and needs --dry-run: pad-harness "
                               f"run {args.file or DEFAULT_EXPERIMENT} --dry-run --estimate-on {args.estimate_on}")
        from harness.estimate.hardware import accelerator

        accelerator(args.estimate_on)  # an unknown name fails here, before any planning
    path = Path(args.file) if args.file else _default_experiment()
    exp = api.load(path, args.set or ())
    if not args.dry_run:
        api.validate(exp)  # a missing API key or an impossible answer length, before any work
    run_dir = Path(args.run_dir) if args.run_dir else exp.run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        where = "--run-dir" if args.run_dir else f"output_dir of {path}"
        raise HarnessError(f"{where}: {str(run_dir)!r} is a file, not a directory; name a directory (it is "
                           f"created if missing)")
    if args.dry_run:
        return dry_run(exp, run_dir, str(path), args.estimate_on)

    def announce() -> None:  # the main process only: a worker of a multi-process launch prints nothing
        if not args.quiet:
            print(f"pad-harness: running {path} -> {run_dir}", flush=True)

    results = api.run(exp, run_dir, progress=not args.quiet,
                      ignore_memory_plan=getattr(args, "ignore_memory_plan", False), on_start=announce)
    if not results.main_process:  # the main process reports
        return 0
    board = run_dir / "LEADERBOARD.md"
    if board.is_file():  # the scores table (the whole Markdown with --verbose); the rest is in the reports
        text = board.read_text()
        print(text if args.verbose else ("" if args.quiet else "\n") + scores_section(text) + "\n")
    if not args.quiet:
        uses_engines = exp.generation_backend != "hf" or exp.sampling.backend != "hf"
        engines = f"; {results.engine_starts} generation engine start(s)" if uses_engines else ""
        print(f"finished in {results.timings.get('total', 0):.0f}s{engines}; reports:")
    for name, report_path in sorted(results.report_paths.items()):
        print(f"  {name:18s} {report_path}")
    return 0


def dry_run(exp: Any, run_dir: Path, source_file: str, estimate_on: str | None) -> int:
    """Print the plan (each stage cached or to run) and, with `--estimate-on`, what it will cost there."""
    from harness.errors import ModelSourceError
    from harness.pipeline import Pipeline

    try:
        pipe = Pipeline(exp, run_dir, source_file=source_file, progress=False)
    except ModelSourceError as exc:
        # Offline, a hub model's identity (its snapshot commit) cannot be resolved; a plan (and its estimate,
        # which needs only configs and shapes) is still shown, with each model's name as its identity. A
        # local path that is not there stays an error.
        if not all(_hub_id(spec.model) for spec in (exp.teacher, exp.student)):
            raise
        why = str(exc).split(":", 1)[0]  # "model 'google/gemma-2-9b-it' is not available"
        print(f"note: {why} here, so its identity (snapshot commit) is unknown; the plan below identifies models "
              f"by their names: its keys and cached/to-run marks are not those of a real run", file=sys.stderr)
        pipe = Pipeline(exp, run_dir, source_file=source_file, progress=False, named_identities=True)
    print(pipe.describe_plan())
    if estimate_on is not None:
        from harness.estimate import estimate_plan, format_estimate

        print(format_estimate(estimate_plan(pipe.build_plan(project_selections=True), pipe.ctx, estimate_on)))
    return 0


def _hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).expanduser().exists()


def scores_section(markdown: str) -> str:
    """The leaderboard's scores table (what `run --quiet` prints): its `## Scores` section, footnotes
    included, up to the next section."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Scores"), None)
    if start is None:
        return markdown.rstrip()
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).rstrip()


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.config import load_experiment
    from harness.preflight import preflight

    failed = 0
    for file in args.files:  # every file is checked and reported, not only up to the first bad one
        try:
            exp = load_experiment(file, args.set or ())
            preflight(exp, file)
        except HarnessError as exc:
            console.print_error(str(exc))
            failed += 1
            continue
        methods = ", ".join(m.row_name for m in exp.methods)
        benches = ", ".join(b.name for b in exp.benchmarks) or "none"
        print(f"{file}: ok ({exp.name}: methods {methods}; benchmarks {benches}; judge {exp.judge.backend})")
    return 2 if failed else 0


def cmd_list(registry_name: str) -> int:
    from harness import registry

    reg = getattr(registry, registry_name)
    for name in reg.names():
        print(f"{name:14s} {reg.describe(name)}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from harness.benchmarks.base import Benchmark
    from harness.registry import BENCHMARKS

    cls: type[Benchmark] = BENCHMARKS.get(args.benchmark)
    if not cls.scores_official_files():
        raise HarnessError(f"benchmark {args.benchmark!r} cannot score external judgement files")
    path = Path(args.judgments)
    if not path.exists():
        raise HarnessError(f"judgement file {str(path)!r} not found")
    result = cls.score_official(path)
    if args.json:
        print(json.dumps({"metrics": result.metrics, "notes": result.notes}, indent=2, sort_keys=True))
    else:
        for key, value in result.metrics.items():
            print(f"{key:28s} {value}")
        for note in result.notes:
            print(f"note: {note}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.interop.export import export_run

    rows = [r for chunk in args.rows or [] for r in chunk.split(",") if r]
    formats = [f for chunk in args.format or [] for f in chunk.split(",") if f]
    out = Path(args.out)
    exported = export_run(Path(args.run_dir), out, rows=rows or None, formats=formats or None,
                          link_models=args.link)
    for row in exported:
        for name, files in sorted(row.files.items()):
            print(f"{row.folder:22s} {name:16s} {len(files)} file(s)")
        for name, why in sorted(row.skipped.items()):
            print(f"{row.folder:22s} {name:16s} skipped: {why}")
    print(f"export written to {out} (index: {out / 'export.json'})")
    if args.push_to_hub:
        from harness.interop.push import push_export

        url = push_export(Path(args.run_dir), out, exported, args.push_to_hub, private=args.private)
        print(f"pushed to {url}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.merge import run_report

    for name, path in sorted(run_report(args).items()):
        print(f"{name:18s} {path}")
    return 0


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pad-harness")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pad-harness", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pad-harness {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment (default: leaderboards/smol.yaml, offline)")
    run.add_argument("file", nargs="?", help="experiment YAML")
    run.add_argument("--dry-run", action="store_true", help="print the plan: each stage cached or to run")
    run.add_argument("--estimate-on", metavar="h100|h200|a100|a800|l4|cpu", type=str.lower,
                     help="with --dry-run: price the plan on this accelerator: tokens, FLOPs and device-hours per "
                          "stage, the peak and assumed MFUs stated, and each stage's peak memory against the device's "
                          "(harness/estimate/hardware.py, memory.py)")
    run.add_argument("--run-dir", help="override the experiment's output directory")
    run.add_argument("--set", action="append", metavar="PATH=VALUE", help=SET_HELP)
    run.add_argument("--quiet", action="store_true", help="print only the scores table and the report paths")
    run.add_argument("--verbose", action="store_true", help="show every log line, libraries' INFO lines too")
    run.add_argument("--ignore-memory-plan", action="store_true",
                     help="train even where the memory estimate says a train stage will not fit this device "
                          "(harness/estimate/gate.py; without it such a run stops before any work)")
    val = sub.add_parser("validate", help="check experiment files without running them")
    val.add_argument("files", nargs="+")
    val.add_argument("--set", action="append", metavar="PATH=VALUE", help=SET_HELP)
    sub.add_parser("methods", help="list installed methods")
    sub.add_parser("benchmarks", help="list installed benchmarks")
    sub.add_parser("judges", help="list installed judges")
    sub.add_parser("backends", help="list installed generation backends")
    sub.add_parser("signals", help="list installed signal sources (what methods read from teacher and student)")
    score = sub.add_parser("score", help="score official judgement files (AlpacaEval, arena-hard-auto, FastChat)")
    score.add_argument("benchmark")
    score.add_argument("--judgments", required=True)
    score.add_argument("--json", action="store_true")
    score.add_argument("--verbose", action="store_true", help="show every log line, libraries' INFO lines too")
    export = sub.add_parser("export", help="write a run's answers, judgements and students in the official formats")
    export.add_argument("run_dir", help="a finished run directory (its results.json names the artifacts)")
    export.add_argument("--out", required=True, help="the export folder (one folder per row inside)")
    export.add_argument("--rows", action="append", metavar="ROW[,ROW]",
                        help="only these rows (labels, or folder names such as pad-seed1); default: every row")
    export.add_argument("--format", action="append", metavar="NAME[,NAME]",
                        help="only these: benchmark names (alpaca_eval2, arena_hard, mt_bench, gsm8k, ...) and "
                             "`model` (the trained students' directories); default: everything")
    export.add_argument("--link", action="store_true", help="link the students' weights instead of copying them")
    export.add_argument("--push-to-hub", metavar="REPO",
                        help="upload to this Hugging Face repo (HF_TOKEN; HF_ENDPOINT honoured): one row with "
                             "--format model pushes its model directory with a model card, else the whole export")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    from harness.report.merge import configure_parser

    configure_parser(sub.add_parser("report", help="regenerate or merge leaderboard reports from run directories"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with console.configured(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False)):
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command in ("methods", "benchmarks", "judges", "backends", "signals"):
            return cmd_list(args.command.upper())
        if args.command == "score":
            return cmd_score(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "export":
            return cmd_export(args)
    except HarnessError as exc:
        console.print_error(str(exc))
        return 2
    except KeyboardInterrupt:
        console.close_open_bars()
        print("pad-harness: interrupted; finished stages are kept, rerun to resume", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
