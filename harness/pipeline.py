"""The pipeline: one experiment -> its plan of cached stages -> results.json + leaderboard reports.

The plan (harness.stages.plan) is built from the experiment alone: every stage owns its inputs, keys chain
through upstream keys, so `--dry-run` can say what is cached and what will run without loading a model.
This module only executes it: each missing artifact computed and stored atomically, inputs verified first
(harness.integrity), one run per run directory (harness.rundir_lock), workers of a multi-process launch
following the main process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.config import Experiment, load_experiment
from harness.diskspace import disk_full_error, is_disk_full
from harness.errors import HarnessError
from harness.integrity import TENSOR_FILES, PlanRunner, keys_in, require_intact
from harness.methods.base import Method
from harness.processes import ProcessInfo, wait_for
from harness.results import RunResults
from harness.run_progress import RunProgress, local_accelerator, plan_estimates, say
from harness.runtime_facts import plan_runtime_warning
from harness.stages.base import Stage
from harness.stages.comparable import experiment_hash
from harness.stages.context import RunContext
from harness.stages.evaluation import ModelRow
from harness.stages.plan import Plan, build_plan
from harness.store import write_json_atomic
from harness.tuning import validate_tuning

__all__ = ["Pipeline", "experiment_hash", "run_experiment"]


class Pipeline:
    def __init__(self, experiment: Experiment, run_dir: Path | None = None, *, source_file: str | None = None,
                 progress: bool = True, named_identities: bool = False, ignore_memory_plan: bool = False) -> None:
        """`named_identities`: models identified by their specs alone, to show a plan whose models cannot be
        resolved here (a hub model offline); such a pipeline is for --dry-run, never run.
        `ignore_memory_plan`: train even where the memory estimate says a train stage will not fit
        (harness.estimate.gate)."""
        validate_tuning(experiment, source_file or "<experiment>")  # a bad search: one line, before any work
        self.exp = experiment
        self.run_dir = Path(run_dir) if run_dir else experiment.run_dir()
        self.ctx = RunContext(experiment, self.run_dir, progress=progress, named_identities=named_identities)
        self.source_file = source_file
        self.ignore_memory_plan = ignore_memory_plan
        self.timings: dict[str, float] = {}
        self._progress: RunProgress | None = None
        self.report_paths: dict[str, Path] = {}

    # The run's shared state, for callers and tests that look at it.
    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def methods(self) -> dict[str, Method]:
        return self.ctx.methods

    @property
    def models(self) -> Any:
        return self.ctx.models

    @property
    def processes(self) -> Any:
        return self.ctx.processes

    @property
    def engines(self) -> Any:
        return self.ctx.models.engines

    def build_plan(self, project_selections: bool = False) -> Plan:
        return build_plan(self.ctx, project_selections)

    def plan(self) -> list[Stage]:
        return self.build_plan().steps

    def rows(self) -> list[ModelRow]:
        return self.build_plan().rows

    def describe_plan(self) -> str:
        lines = [f"experiment {self.exp.name!r} -> {self.run_dir}"]
        plan = self.build_plan()
        for step in plan.steps:
            status = "cached" if step.done else "to run"
            detail = f"  {step.detail}" if step.detail else ""
            lines.append(f"  {status:7s}  {step.kind:10s}  {step.label}  [{step.artifact.key}]{detail}")
        for row in plan.awaiting_selection:
            lines.append(f"  after selection  train + evaluation of {row} x {len(self.exp.seeds)} seed(s), "
                         f"with the settings its selection chooses (the first seed's training is a trial's)")
        for name, reason in self.ctx.unavailable_benchmarks().items():
            lines.append(f"  skipped  {name}: {reason}")
        lines += [f"  warning  {w}" for w in [plan_runtime_warning(plan.steps)] if w]  # thread counts etc.
        return "\n".join(lines)

    # ---------------------------------------------------------------- running
    def run(self) -> RunResults:
        """Run what is missing; one run at a time per run directory (harness.rundir_lock)."""
        from harness.rundir_lock import run_dir_lock

        with run_dir_lock(self.run_dir, take=self.ctx.processes.is_main):
            return self._run_locked()

    def _run_locked(self) -> RunResults:
        from harness.stages.reporting import collect_results, write_all_reports
        from harness.tracking import track_run

        self.run_dir.mkdir(parents=True, exist_ok=True)
        main = self.ctx.processes.is_main
        if main and self.exp.layered:  # `extends:` / `--set`: the experiment as resolved, not one file's text
            (self.run_dir / "experiment.yaml").write_text(resolved_yaml(self.exp))
        elif self.source_file and main:
            (self.run_dir / "experiment.yaml").write_text(Path(self.source_file).read_text())
        started = time.time()
        try:
            plan = self.build_plan()
            self._execute(plan, phase=0)
            if plan.awaiting_selection:  # tuned methods' test rows, keyed by what their selections chose
                plan = self.build_plan()
                if plan.awaiting_selection:
                    raise HarnessError(f"tuning: the selections of {plan.awaiting_selection} were not stored")
                self._execute(plan, phase=1)
        finally:
            self.ctx.close()  # engines shut down, a served judge (vllm_server) stops with the run
        results = collect_results(self.ctx, plan)
        if main:
            results.save(self.run_dir / "results.json")
            self.report_paths = write_all_reports(results, self.run_dir)
            track_run(results, self.run_dir, self.exp.logging, self.report_paths)  # W&B, TensorBoard, MLflow
        self.timings["total"] = round(time.time() - started, 2)
        return results

    def _execute(self, plan: Plan, phase: int) -> None:
        """Run every missing step of `plan` this process computes or takes part in; wait for the rest."""
        main = self.ctx.processes.is_main
        rank, world = self.ctx.processes.rank, self.ctx.processes.world_size
        if world > 1:
            same_plan_everywhere(plan, self.run_dir, self.ctx.processes, phase=phase)
        if not self.ignore_memory_plan:
            from harness.estimate.gate import check_memory_plan

            check_memory_plan(plan, self.ctx)  # a training that will not fit stops here, before any work
        self._check_models_early(plan)
        mine = [step for step in plan.steps if step.runs_on(rank, world)]
        self._progress = self._run_progress(plan, mine) if main else None
        if main:  # inputs verified before each step; a damaged one is rebuilt (harness.integrity)
            for step in plan.steps:
                for leftover in step.leftovers() if step.done else []:
                    shutil.rmtree(leftover, ignore_errors=True)  # interrupted right after storing it
            PlanRunner(mine, self.store, rebuild=world == 1).run(self._run_step)
        else:
            by_key = {s.artifact.key: s for s in plan.steps}  # what a step's inputs name, found once
            for step in mine:
                if not step.done:
                    self._follow_step(step, by_key)
        for step in plan.steps:
            wait_for(step.artifact)  # what the other processes compute (their rows' evaluation)
            if main and step not in mine:
                require_intact(step.artifact, TENSOR_FILES)  # verified before the reports, like main's own

    def _run_progress(self, plan: Plan, mine: list[Stage]) -> RunProgress | None:
        """The plan in one line and, per computed stage, one line with an ETA (harness.run_progress)."""
        if not self.ctx.progress or all(step.done for step in mine):
            return None
        device = local_accelerator()
        progress = RunProgress(mine, plan_estimates(plan, self.ctx, device), device)
        say(progress.summary(plan.steps))
        return progress

    def _run_step(self, step: Stage) -> None:
        """Compute one artifact and store it (atomically: a failure leaves nothing half-written)."""
        engines = self.ctx.models.engines
        if step.engine_key is None or step.engine_key != engines.key:
            engines.release()  # no engine lives beside a judge, a training run or another row's
        t0 = time.time()
        try:
            with self.store.writing(step.artifact) as out:
                manifest = step.run(out) or {}
                manifest.setdefault("wall_time_s", round(time.time() - t0, 3))
                if self.ctx.processes.world_size > 1 and not step.collective:
                    manifest["computed_by_process"] = self.ctx.processes.rank
                _merge_manifest(out, manifest)
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, self.run_dir, f"{step.kind} {step.label!r}") from exc
            raise
        step.after_commit()
        self.timings[f"{step.kind}:{step.label}"] = round(time.time() - t0, 2)
        if self._progress is not None:
            say(self._progress.stage_done(step, time.time() - t0))

    def _follow_step(self, step: Stage, by_key: dict[str, Stage]) -> None:
        """A worker of a multi-process launch (harness/processes.py): take part in collective steps (its
        share of training, its chunks of the per-prompt stages), whose outputs the main process stores, and
        compute and store the steps it owns (its rows' evaluation) once their inputs are there."""
        for key in keys_in(step.artifact.inputs):
            if key in by_key:
                wait_for(by_key[key].artifact)  # stored by the main process (or another worker)
                require_intact(by_key[key].artifact)  # what it reads is verified, as the main process does
        if step.done:
            return  # stored meanwhile (a process arriving late after a restart)
        if not step.collective:
            self._run_step(step)
            return
        with tempfile.TemporaryDirectory(prefix="pad-harness-worker-") as scratch:
            step.run(Path(scratch))
        wait_for(step.artifact)

    def _check_models_early(self, plan: Plan) -> None:
        """Methods that cannot work with these models fail before any work (e.g. KD across vocabularies)."""
        pending = {row.method.row_name for row in plan.rows
                   if row.method is not None and row.train is not None and not row.train.done}
        for row_name in sorted(pending):
            method = self.methods[row_name]
            if method.checks_models():
                models, ctx = self.ctx.models, self.ctx
                method.check_models(models.loaded(ctx.teacher), models.loaded(ctx.student))


def same_plan_everywhere(plan: Plan, run_dir: Path, processes: ProcessInfo, poll_s: float = 0.5,
                         phase: int = 0) -> None:
    """Under a launch, every process must plan the same steps (an optional benchmark whose data loads on one
    machine only, or a model resolved to another snapshot, would leave the main process waiting forever for
    an artifact nobody makes): the main process publishes its plan, each other process compares its own."""
    path = run_dir / "work" / "launch-plan.json"
    launch = ":".join(os.environ.get(k, "") for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"))
    launch += f":phase{phase}"  # a plan made again once tuning's selections are stored
    steps = [f"{s.kind}:{s.label}:{s.artifact.key}" for s in plan.steps]
    if processes.is_main:
        write_json_atomic(path, {"launch": launch, "written_at": time.time(), "steps": steps})
        return
    started = time.time()
    while True:  # the main process's plan of THIS launch (a file left by an earlier one is older)
        published = json.loads(path.read_text()) if path.is_file() else {}
        if published.get("launch") == launch and published.get("written_at", 0) > started - 300:
            break
        time.sleep(poll_s)
    theirs = published["steps"]
    if theirs != steps:
        first = next((i for i, (a, b) in enumerate(zip(theirs, steps, strict=False)) if a != b),
                     min(len(theirs), len(steps)))
        raise HarnessError(
            f"process {processes.rank} plans other steps than the main process (first difference at step "
            f"{first}: main {theirs[first] if first < len(theirs) else 'nothing'}, here "
            f"{steps[first] if first < len(steps) else 'nothing'}): every machine must see the same data and "
            f"models (an optional benchmark's data, a hub model's snapshot); make them agree and rerun")


def _merge_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / "manifest.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**existing, **manifest}, indent=2, sort_keys=True, default=str))


def resolved_yaml(exp: Experiment) -> str:
    """The experiment as YAML, with where it came from in a comment (the file, `extends:`, `--set`)."""
    import yaml

    origin = exp.origin
    head = [f"# resolved from {origin.get('file')}"]
    head += [f"#   extends {base}" for base in origin.get("extends") or []]
    head += [f"#   --set {item}" for item in origin.get("overrides") or []]
    return "\n".join(head) + "\n" + yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)


def run_experiment(path_or_experiment: str | Path | Experiment, run_dir: Path | None = None,
                   progress: bool = True) -> RunResults:
    """Run (or resume) an experiment; the programmatic twin of `pad-harness run FILE`."""
    if isinstance(path_or_experiment, Experiment):
        pipe = Pipeline(path_or_experiment, run_dir, progress=progress)
    else:
        pipe = Pipeline(load_experiment(path_or_experiment), run_dir, source_file=str(path_or_experiment),
                        progress=progress)
    return pipe.run()
