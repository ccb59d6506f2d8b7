"""The pipeline: one experiment -> cached stages -> results.json + leaderboard reports.

    prompts -> samples -> signals (each once, shared) -> trainset -> train (method x seed)
            -> answers (model x benchmark) -> judgements -> score -> report

Every stage output is an artifact keyed by a hash of exactly its inputs (harness.store). The plan is
computed from the experiment alone (keys chain through upstream keys), so `--dry-run` can say what is
cached and what will run without loading a model. Models are loaded lazily, once, and only for stages
that actually run.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.config import Experiment, MethodSpec, load_experiment
from harness.diskspace import disk_full_error, is_disk_full
from harness.engines import EnginePool
from harness.methods.base import Method, Signal
from harness.models.base import Generator, LoadedModel
from harness.models.residency import park, unpark
from harness.models.scoring import Scorer
from harness.processes import ProcessInfo, wait_for
from harness.registry import BACKENDS, BENCHMARKS, METHODS
from harness.results import MAY_DIFFER_BETWEEN_MERGED_RUNS, RunResults
from harness.stages import STAGE_VERSIONS
from harness.stages.data import backend_key, build_generator
from harness.store import Artifact, ArtifactStore, canonical_json, hash_inputs


@dataclass
class Step:
    stage: str
    label: str
    artifact: Artifact
    run: Callable[[Path], dict[str, Any] | None]
    after_commit: Callable[[], None] | None = None  # once the artifact is stored (e.g. drop its scratch files)
    collective: bool = False  # every process of a multi-process launch takes part (training); else main only
    detail: str = ""  # shown by --dry-run (e.g. which judge grades these answers)
    engine_key: str | None = None  # steps with the same key share one generation engine (harness.engines)

    @property
    def done(self) -> bool:
        return self.artifact.done


@dataclass
class ModelRow:
    """One evaluated model: the teacher, the untrained student, or a trained (method, seed)."""

    row: str
    kind: str  # teacher | student | method
    key: dict[str, Any]  # what identifies its weights + context, for downstream cache keys
    method: MethodSpec | None = None
    seed: int | None = None
    train: Artifact | None = None


def model_key(spec: Any) -> dict[str, Any]:
    from harness.models.sources import model_fingerprint

    return model_fingerprint(spec)


class Pipeline:
    def __init__(self, experiment: Experiment, run_dir: Path | None = None, *, source_file: str | None = None,
                 progress: bool = True) -> None:
        self.exp = experiment
        self.run_dir = Path(run_dir) if run_dir else experiment.run_dir()
        self.store = ArtifactStore(self.run_dir)
        self.source_file = source_file
        self.processes = ProcessInfo.from_env()
        self.progress = progress and self.processes.is_main  # one set of progress bars per run
        self.methods: dict[str, Method] = {
            spec.row_name: METHODS.get(spec.name)(spec.params) for spec in experiment.methods
        }
        self._models: dict[str, Any] = {}
        self.engines = EnginePool()
        self._unavailable: dict[str, str] | None = None
        self.teacher_key = model_key(experiment.teacher)
        self.student_key = model_key(experiment.student)
        self.timings: dict[str, float] = {}

    # ---------------------------------------------------------------- models (lazy, loaded once)
    # `weights=False`: the caller needs the tokenizer, chat format and identity only (a backend that loads the
    # weights itself); a model parked in host memory stays there.
    def teacher(self, weights: bool = True) -> Any:
        return self._model("teacher", self.exp.teacher, weights)

    def student(self, weights: bool = True) -> Any:
        return self._model("student", self.exp.student, weights)

    def _model(self, name: str, spec: Any, weights: bool = True) -> Any:
        if name not in self._models:
            from harness.models.sources import load_model

            self._models[name] = load_model(spec)
        return unpark(self._models[name]) if weights else self._models[name]

    def generator(self, backend: str, loaded: LoadedModel) -> Generator:
        """Backend `backend` around `loaded`. One that loads the weights itself (vLLM) gets the device to
        itself: the transformers copies this run holds wait in host memory until next used."""
        if not BACKENDS.get(backend).uses_loaded_weights:
            for held in self._models.values():
                if isinstance(held, LoadedModel):
                    park(held)
                elif isinstance(held, Scorer):
                    held.forget_prompts()  # remembered KV caches would hold device memory beside the engine
        return self.engines.track(build_generator(self.exp, backend, loaded))

    def sampling_generator(self, who: str | None = None) -> Generator:
        """`sampling.backend` around the sampler (`sampling.sampler`, or `who`): teacher or student."""
        backend = self.exp.sampling.backend
        weights = BACKENDS.get(backend).uses_loaded_weights
        teacher = (who or self.exp.sampling.sampler) == "teacher"
        return self.generator(backend, self.teacher(weights) if teacher else self.student(weights))

    # ---------------------------------------------------------------- artifact keys
    def _art(self, stage: str, label: str, inputs: dict[str, Any]) -> Artifact:
        return self.store.artifact(stage, label, {"version": STAGE_VERSIONS[stage], **inputs})

    def prompts_artifact(self) -> Artifact:
        return self._art("prompts", "prompts", {"prompts": self.exp.prompts})

    def samples_artifact(self) -> Artifact:
        sampler = self.teacher_key if self.exp.sampling.sampler == "teacher" else self.student_key
        return self._art("samples", "samples", {"prompts": self.prompts_artifact().key, "sampler": sampler,
                                                "sampling": self.exp.sampling,
                                                "backend": backend_key(self.exp, self.exp.sampling.backend)})

    def signals_needed(self) -> list[str]:
        needed: set[str] = set()
        for method in self.methods.values():
            needed |= set(method.signals_needed())
        return [s for s in Signal.ALL if s in needed]

    def signal_artifacts_needed(self) -> list[str]:
        from harness.stages.signals_stage import ARTIFACT_ORDER, SIGNAL_ARTIFACT

        names = {SIGNAL_ARTIFACT[s] for s in self.signals_needed()}
        return [n for n in ARTIFACT_ORDER if n in names]

    def signal_artifact(self, name: str) -> Artifact:
        """The artifact holding signal `name` (a Signal name or an artifact name)."""
        from harness.stages.signals_stage import SIGNAL_ARTIFACT, signal_inputs

        art_name = SIGNAL_ARTIFACT.get(name, name)
        samples = {} if art_name == "teacher_samples" else {"samples": self.samples_artifact().key}
        return self._art("signal", art_name, {**samples, **signal_inputs(
            art_name, self.exp, self.teacher_key, self.student_key, self.prompts_artifact().key)})

    def trainset_artifact(self) -> Artifact:
        filters = sorted((f for m in self.methods.values() if (f := m.filter_identity()) is not None),
                         key=canonical_json)
        signals = {name: self.signal_artifact(name).key for name in self.signals_needed()
                   if name != Signal.TEACHER_SAMPLES}
        return self._art("trainset", "trainset", {"samples": self.samples_artifact().key, "filters": filters,
                                                  "signals": signals})

    def train_artifact(self, spec: MethodSpec, seed: int) -> Artifact:
        method = self.methods[spec.row_name]
        signals = {name: self.signal_artifact(name).key for name in sorted(method.signals_needed())}
        # On-policy samples drawn while training come from `sampling.backend` (keys unchanged for hf).
        live = ({"live_sampler": backend_key(self.exp, self.exp.sampling.backend)}
                if method.on_policy and self.exp.sampling.backend != "hf" else {})
        return self._art("train", f"{spec.row_name}-seed{seed}", {
            "trainset": self.trainset_artifact().key, "signals": signals, "method": spec.name,
            "params": method.params.model_dump(mode="json"), "budget": self.exp.budget.result_inputs(), "seed": seed,
            "student": self.student_key, **live,
        })

    def rows(self) -> list[ModelRow]:
        rows = [ModelRow("teacher", "teacher", {"teacher": self.teacher_key}),
                ModelRow("student (untrained)", "student", {"student": self.student_key})]
        for spec in self.exp.methods:
            for seed in self.exp.seeds:
                art = self.train_artifact(spec, seed)
                rows.append(ModelRow(spec.row_name, "method", {"trained": art.key}, spec, seed, art))
        return rows

    def answers_artifact(self, row: ModelRow, bench_index: int) -> Artifact:
        bench = self.exp.benchmarks[bench_index]
        label = f"{row.row}-s{row.seed}-{bench.name}" if row.seed is not None else f"{row.row}-{bench.name}"
        # A benchmark that reads the run's prompts and models (teacher agreement) depends on them too.
        run = ({"run": {"prompts": self.exp.prompts, "teacher": self.teacher_key, "student": self.student_key}}
               if BENCHMARKS.get(bench.name).uses_run else {})
        return self._art("answers", label, {"model": row.key, "benchmark": bench,
                                            "backend": backend_key(self.exp, self.exp.generation_backend), **run})

    def judgements_artifact(self, row: ModelRow, bench_index: int) -> Artifact:
        from harness.stages.evaluation import judge_identity_for_key

        answers = self.answers_artifact(row, bench_index)
        return self._art("judgements", answers.label, {"answers": answers.key,
                                                       "judge": judge_identity_for_key(self, bench_index)})

    def unavailable_benchmarks(self) -> dict[str, str]:
        """Optional benchmarks whose data cannot be found here, with the reason (checked once)."""
        if self._unavailable is None:
            from harness.errors import DataSourceError
            from harness.stages.evaluation import build_benchmark

            self._unavailable = {}
            for b, spec in enumerate(self.exp.benchmarks):
                if not spec.optional:
                    continue
                try:
                    build_benchmark(self, b).load()
                except DataSourceError as exc:
                    self._unavailable[spec.name] = str(exc)
        return self._unavailable

    def benchmark_indices(self) -> list[int]:
        skipped = self.unavailable_benchmarks()
        return [b for b, spec in enumerate(self.exp.benchmarks) if spec.name not in skipped]

    # ---------------------------------------------------------------- the plan
    def plan(self) -> list[Step]:
        from harness.stages import data as data_stages
        from harness.stages import evaluation, signals_stage, training

        exp = self.exp
        steps: list[Step] = [
            Step("prompts", "prompts", self.prompts_artifact(), lambda out: data_stages.run_prompts(exp, out)),
            Step("samples", "samples", self.samples_artifact(), lambda out: data_stages.run_samples(
                exp, data_stages.read_prompts(self.prompts_artifact().path), self.sampling_generator(), out)),
        ]
        for name in self.signal_artifacts_needed():
            steps.append(Step("signal", name, self.signal_artifact(name),
                              partial(signals_stage.run_signal, self, name)))
        steps.append(Step("trainset", "trainset", self.trainset_artifact(),
                          partial(signals_stage.run_trainset, self)))
        rows = self.rows()
        for row in rows:
            if row.train is not None:
                steps.append(Step("train", row.train.label, row.train, partial(training.run_training, self, row),
                                  after_commit=partial(training.release_checkpoints, self, row), collective=True))
        judges = {b: evaluation.describe_judge(self, b) for b in self.benchmark_indices()}
        for row in rows:
            # A row's answers back to back (one engine serves them all), then its judgements.
            for b in self.benchmark_indices():
                answers = self.answers_artifact(row, b)
                steps.append(Step("answers", answers.label, answers, partial(evaluation.run_answers, self, row, b),
                                  engine_key=f"{row.row}|{row.seed}"))
            for b in self.benchmark_indices():
                judged = self.judgements_artifact(row, b)
                steps.append(Step("judgements", judged.label, judged,
                                  partial(evaluation.run_judgements, self, row, b), detail=judges[b]))
        return steps

    def describe_plan(self) -> str:
        lines = [f"experiment {self.exp.name!r} -> {self.run_dir}"]
        for step in self.plan():
            status = "cached" if step.done else "to run"
            detail = f"  {step.detail}" if step.detail else ""
            lines.append(f"  {status:7s}  {step.stage:10s}  {step.label}  [{step.artifact.key}]{detail}")
        for name, reason in self.unavailable_benchmarks().items():
            lines.append(f"  skipped  {name}: {reason}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- running
    def run(self) -> RunResults:
        """Run what is missing; one run at a time per run directory (harness.rundir_lock)."""
        from harness.rundir_lock import run_dir_lock

        with run_dir_lock(self.run_dir, take=self.processes.is_main):
            return self._run_locked()

    def _run_locked(self) -> RunResults:
        from harness.integrity import PlanRunner
        from harness.stages.reporting import collect_results, write_all_reports

        self.run_dir.mkdir(parents=True, exist_ok=True)
        main = self.processes.is_main
        if self.source_file and main:
            (self.run_dir / "experiment.yaml").write_text(Path(self.source_file).read_text())
        self._check_models_early()
        started = time.time()
        try:
            if main:  # inputs verified before each step; a damaged one is rebuilt (harness.integrity)
                PlanRunner(self.plan(), self.store, rebuild=self.processes.world_size == 1).run(self._run_step)
            else:
                for step in self.plan():
                    if not step.done:
                        self._follow_step(step)
        finally:
            self.engines.release()
            self.close_judges()  # a served judge (vllm_server) stops with the run
        results = collect_results(self)
        if main:
            results.save(self.run_dir / "results.json")
            self.report_paths = write_all_reports(results, self.run_dir)
        self.timings["total"] = round(time.time() - started, 2)
        return results

    def close_judges(self) -> None:
        for key in [k for k in self._models if k.startswith("judge:")]:
            self._models.pop(key).close()

    def _run_step(self, step: Step) -> None:
        """Compute one artifact and store it (atomically: a failure leaves nothing half-written)."""
        if step.engine_key is None or step.engine_key != self.engines.key:
            self.engines.release()  # no engine lives beside a judge, a training run or another row's
        t0 = time.time()
        try:
            with self.store.writing(step.artifact) as out:
                manifest = step.run(out) or {}
                manifest.setdefault("wall_time_s", round(time.time() - t0, 3))
                _merge_manifest(out, manifest)
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, self.run_dir, f"{step.stage} {step.label!r}") from exc
            raise
        if step.after_commit is not None:
            step.after_commit()
        self.timings[f"{step.stage}:{step.label}"] = round(time.time() - t0, 2)

    def _follow_step(self, step: Step) -> None:
        """A worker of a multi-process launch (harness/processes.py): take part in collective steps,
        whose outputs only the main process stores, then wait for the main process's artifact."""
        if step.collective:
            with tempfile.TemporaryDirectory(prefix="pad-harness-worker-") as scratch:
                step.run(Path(scratch))
        wait_for(step.artifact)

    def _check_models_early(self) -> None:
        """Methods that cannot work with these models fail before any work (e.g. KD across vocabularies)."""
        pending = [r for r in self.rows() if r.train is not None and not r.train.done]
        checked: set[str] = set()
        for row in pending:
            assert row.method is not None
            if row.method.row_name in checked:
                continue
            checked.add(row.method.row_name)
            method = self.methods[row.method.row_name]
            if type(method).check_models is not Method.check_models:
                method.check_models(self.teacher(), self.student())


def _merge_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / "manifest.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**existing, **manifest}, indent=2, sort_keys=True, default=str))


def run_experiment(path_or_experiment: str | Path | Experiment, run_dir: Path | None = None,
                   progress: bool = True) -> RunResults:
    """Run (or resume) an experiment; the programmatic twin of `pad-harness run FILE`."""
    if isinstance(path_or_experiment, Experiment):
        pipe = Pipeline(path_or_experiment, run_dir, progress=progress)
    else:
        pipe = Pipeline(load_experiment(path_or_experiment), run_dir, source_file=str(path_or_experiment),
                        progress=progress)
    return pipe.run()


def experiment_hash(exp: Experiment) -> str:
    """What must match for two runs to share one leaderboard (methods and seeds may differ)."""
    fields = {**exp.model_dump(mode="json"), "budget": exp.budget.result_inputs()}  # not how it is stored
    return hash_inputs({k: v for k, v in fields.items() if k not in MAY_DIFFER_BETWEEN_MERGED_RUNS})
