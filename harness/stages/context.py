"""What every stage of one run shares: the experiment, the artifact store, the model pool and the judges.

Stages receive this and nothing else from the run: they read their upstream artifacts through the stages
they were built with (harness.stages.plan), get models by handle from `models` (harness.models.pool) and
judges from `judge(spec)`. Nothing here runs a stage; the executor is harness.pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.benchmarks.base import Benchmark, benchmark_from_spec
from harness.config import BenchmarkSpec, Experiment, JudgeSpec, MethodSpec
from harness.judges.cache import CachedJudge
from harness.methods.base import Method
from harness.models.handles import ModelHandle
from harness.models.pool import ModelPool
from harness.processes import ProcessInfo
from harness.registry import METHODS
from harness.store import ArtifactStore, hash_inputs


def model_key(spec: Any) -> dict[str, Any]:
    """A model's identity for cache keys, without loading its weights."""
    from harness.models.sources import model_fingerprint

    return model_fingerprint(spec)


def named_identity(spec: Any) -> dict[str, Any]:
    """A model identified by its spec alone (a hub model offline: its snapshot commit is unknown). Only for
    showing a plan: these keys are not those of a real run."""
    return {"model": spec.model, "revision": spec.revision, "unresolved": True,
            "context": spec.model_dump(mode="json", exclude={"model", "revision"})}


def _use_local_device() -> None:
    """Each process of a launch on its own GPU (models loaded on `cuda` land on the current device)."""
    import os

    import torch

    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)  # initialises CUDA in this process with every GPU visible (accelerate's view)
        # Processes it starts (a vLLM engine core, a vllm_server judge) see its GPU alone, not GPU 0 of all.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if local < len(ids):
            os.environ["CUDA_VISIBLE_DEVICES"] = ids[local]


class RunContext:
    def __init__(self, exp: Experiment, run_dir: Path, *, progress: bool = True,
                 processes: ProcessInfo | None = None, named_identities: bool = False) -> None:
        self.exp = exp
        self.run_dir = run_dir
        self.store = ArtifactStore(run_dir)
        self.processes = processes or ProcessInfo.from_env()
        if self.processes.world_size > 1:
            _use_local_device()
        self.progress = progress and self.processes.is_main  # one set of progress bars per run
        self.methods: dict[str, Method] = {spec.row_name: METHODS.get(spec.name)(spec.params) for spec in exp.methods}
        self.models = ModelPool(dict(exp.backends), batch_size=exp.sampling.batch_size)
        self.identify = named_identity if named_identities else model_key  # a model's identity (cache keys)
        self.teacher_key = self.identify(exp.teacher)
        self.student_key = self.identify(exp.student)
        self.teacher = ModelHandle("teacher", exp.teacher, {"teacher": self.teacher_key})
        self.student = ModelHandle("student", exp.student, {"student": self.student_key})
        self._judges: dict[str, CachedJudge] = {}
        self._unavailable: dict[str, str] | None = None
        self._dev_spec: BenchmarkSpec | None = None
        self._benchmarks: dict[int, Benchmark] = {}  # test-split benchmarks by index, built once

    def handle(self, who: str) -> ModelHandle:
        """"teacher" or "student" (the untrained one)."""
        return self.teacher if who == "teacher" else self.student

    def backend_key(self, backend: str) -> dict[str, Any]:
        return self.models.backend_key(backend)

    # ------------------------------------------------------------------ benchmarks
    def benchmark(self, index: int) -> Benchmark:
        """Benchmark `index` of the experiment, built once per run (every stage of every row asks for it);
        one that reads the run (teacher agreement) bound to it."""
        if index not in self._benchmarks:
            bench = benchmark_from_spec(self.exp.benchmarks[index])
            if bench.uses_run:
                from harness.stages.benchmark_run import BenchmarkRun

                bench.bind(BenchmarkRun(self))
            self._benchmarks[index] = bench
        return self._benchmarks[index]

    def unavailable_benchmarks(self) -> dict[str, str]:
        """Optional benchmarks whose data cannot be found here, with the reason (checked once)."""
        if self._unavailable is None:
            from harness.errors import DataSourceError

            self._unavailable = {}
            for b, spec in enumerate(self.exp.benchmarks):
                if not spec.optional:
                    continue
                try:
                    self.benchmark(b).load()
                except DataSourceError as exc:
                    self._unavailable[spec.name] = str(exc)
        return self._unavailable

    def method_for(self, spec: MethodSpec) -> Method:
        """The method instance of an entry (a tuning trial's entry carries its own params)."""
        if spec in self.exp.methods:
            return self.methods[spec.row_name]
        return METHODS.get(spec.name)(spec.params)

    # ------------------------------------------------------------------ tuning's dev split
    def dev_spec(self) -> BenchmarkSpec:
        """The benchmark tuning selects on, as its dev split is evaluated: the test entry of the same name
        lends its params, answer length and judge (so dev and test measure the same thing)."""
        assert self.exp.tuning is not None
        if self._dev_spec is None:
            select = self.exp.tuning.select_on
            test = next((b for b in self.exp.benchmarks if b.name == select.benchmark), None)
            base = test.model_dump() if test is not None else {"name": select.benchmark}
            self._dev_spec = BenchmarkSpec.model_validate({**base, "subset": select.subset, "optional": False})
        return self._dev_spec

    def dev_test_items(self) -> int:
        """How many items the test split of the select-on benchmark takes (0 if it is not a test benchmark)."""
        assert self.exp.tuning is not None
        name = self.exp.tuning.select_on.benchmark
        return max((benchmark_from_spec(b).test_items() for b in self.exp.benchmarks if b.name == name), default=0)

    def dev_benchmark(self) -> Benchmark:
        bench = benchmark_from_spec(self.dev_spec()).on_dev_split(self.dev_test_items())
        if bench.uses_run:
            from harness.stages.benchmark_run import BenchmarkRun

            bench.bind(BenchmarkRun(self))
        return bench

    def benchmark_indices(self) -> list[int]:
        skipped = self.unavailable_benchmarks()
        return [b for b, spec in enumerate(self.exp.benchmarks) if spec.name not in skipped]

    # ------------------------------------------------------------------ judges
    def judge(self, spec: JudgeSpec) -> CachedJudge:
        """One judge per distinct spec, shared by the benchmarks that use it; every call cached on disk."""
        cache_key = hash_inputs(spec.model_dump(mode="json"))
        if cache_key not in self._judges:
            from harness.judges.factory import build_judge

            # One cache file per process of a launch: SQLite's locks are not to be trusted on a file system
            # that several machines share.
            rank = self.processes.rank
            name = "judge_cache.sqlite" if rank == 0 else f"judge_cache-rank{rank}.sqlite"
            self._judges[cache_key] = build_judge(spec, self.run_dir / name, params=spec.params)
        return self._judges[cache_key]

    def close_judges(self) -> None:
        """A served judge (vllm_server) stops with the run."""
        while self._judges:
            self._judges.popitem()[1].close()

    def close(self) -> None:
        self.models.close()
        self.close_judges()
