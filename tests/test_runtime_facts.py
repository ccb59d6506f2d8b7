"""Every manifest records what decides the low bits of its floats (thread count, device, torch build, kernel
flags: harness.runtime_facts); a run directory holding artifacts made under different ones is flagged by
`--dry-run` (Pipeline.describe_plan) and under the report's scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.experiments import small_experiment
from helpers.threads import pinned_threads

from harness.config import parse_experiment
from harness.pipeline import Pipeline
from harness.report.leaderboard import build_leaderboard
from harness.report.sample import sample_results
from harness.report.writers import markdown_text
from harness.runtime_facts import LOW_BIT_FACTS, mixed_runtime, runtime_facts
from harness.store import ArtifactStore


def store_one(store: ArtifactStore, label: str, threads: int) -> dict:
    artifact = store.artifact("demo", label, {"label": label})
    with pinned_threads(threads), store.writing(artifact) as out:
        (out / "values.json").write_text("[]")
    return json.loads((artifact.path / "manifest.json").read_text())


def test_every_manifest_records_the_thread_count_and_the_device(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    one, two = store_one(store, "a", 1), store_one(store, "b", 2)
    assert (one["runtime"]["threads"], two["runtime"]["threads"]) == (1, 2)
    facts = one["runtime"]
    assert facts["torch"] == torch.__version__ and facts["device"] == "cpu"
    assert {"cpu_capability", "deterministic", "mkl", "mkldnn", "float32_matmul_precision"} <= set(facts)
    assert set(LOW_BIT_FACTS) - set(facts) <= {"tf32_matmul", "tf32_cudnn", "cudnn_benchmark"}  # CUDA only
    assert "runtime" not in one["inputs"]  # a fact, not an input: the key is the same


def test_mixing_is_detected_and_named() -> None:
    def manifest(threads: int) -> dict:
        return {"runtime": {**runtime_facts(), "threads": threads}}

    assert mixed_runtime([("samples", manifest(1)), ("signal a", manifest(1))]) is None
    warning = mixed_runtime([("samples", manifest(1)), ("signal a", manifest(2)), ("train b", manifest(1))])
    assert warning is not None and "\n" not in warning
    assert "different threads" in warning and "threads=1 (samples, train b)" in warning
    assert "threads=2 (signal a)" in warning
    # A chunked stage lists each process's facts; a manifest from before they were recorded is not judged.
    assert mixed_runtime([("s", {"runtime": [manifest(1)["runtime"], manifest(4)["runtime"]]}), ("old", {})])
    assert mixed_runtime([("old", {}), ("s", manifest(3))]) is None
    # A process on a GPU is not judged by its host thread count.
    gpu = {**runtime_facts(), "device": "cuda:X"}
    assert mixed_runtime([("a", {"runtime": {**gpu, "threads": 1}}), ("b", {"runtime": {**gpu, "threads": 8}})]) is None
    # The process about to add artifacts counts.
    assert "this process" in (mixed_runtime([("a", manifest(1))], current=manifest(2)["runtime"]) or "")


def test_dry_run_warns_about_a_run_dir_made_under_two_thread_counts(tmp_path: Path) -> None:
    exp = parse_experiment(small_experiment("mix", prompts=2, budget={"micro_batch": 1}), "test")
    pipe = Pipeline(exp, tmp_path / "run", progress=False)
    prompts, samples = pipe.plan()[:2]
    with pinned_threads(1):
        pipe._run_step(prompts)
        assert "warning" not in pipe.describe_plan()
        with pinned_threads(2):
            pipe._run_step(samples)
        plan_text = pipe.describe_plan()
    assert "warning  this run directory mixes artifacts made under different threads" in plan_text
    assert "threads=1 (prompts " in plan_text and "threads=2 (samples " in plan_text


@pytest.mark.parametrize("warning", [None, "this run directory mixes artifacts made under different threads: x"])
def test_the_report_says_it_under_the_scores(warning: str | None) -> None:
    results = sample_results(methods=("pad",), seeds=(0,))
    results.provenance["runtime"] = {"facts": [], "warning": warning}
    text = markdown_text(build_leaderboard(results, n_boot=50))
    scores_end = text.index("## ", text.index("## Scores") + 3)
    assert (f"Warning: {warning}." in text[:scores_end]) == (warning is not None)
