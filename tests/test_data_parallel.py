"""The per-prompt stages (samples, every signal source) split across the processes of a launch.

Chunk j of `data_parallel.chunk` prompts is computed by process j mod N and the main process merges them:
the artifacts must be the single-process ones byte for byte (same keys: the launch is not an input), a
process killed mid-stage must recompute only its unfinished chunks, and two "nodes" (two torchrun
launchers rendezvousing on loopback, one process each, sharing the run directory) must store the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.experiments import small_experiment
from helpers.threads import LAUNCH_THREADS, pinned_threads, recorded_threads

from harness.config import parse_experiment
from harness.pipeline import Pipeline

# Every built-in signal source: PAD (teacher log-probs, MCQ), DPO (reference), KD (top-k), SeqKD (own samples).
METHODS = [{"name": "pad", "params": {"mcq_filter": False}}, {"name": "dpo"}, {"name": "kd"}, {"name": "seqkd"}]
SPLIT = small_experiment("split", prompts=5, samples=2, sample_tokens=6, methods=METHODS, signals={"topk": 3},
                         budget={"max_steps": 1, "epochs": None, "micro_batch": 1},
                         data_parallel={"chunk": 2})  # 5 prompts: chunks {0,1} {2,3} {4}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def per_prompt_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of the samples and signal artifacts (manifests aside: they hold timings), by path."""
    files = {}
    for stage in ("samples", "signal"):
        for path in sorted((run_dir / "artifacts" / stage).glob("*/*")):
            if path.name != "manifest.json":
                files[str(path.relative_to(run_dir))] = path.read_bytes()
    return files


def single_process(tmp_path: Path) -> Path:
    """The reference run, at the launches' thread count: bytes are equal only at equal thread counts (at 2
    threads `student_logprobs` differed in 4 of 48 values, by up to 7.6e-6)."""
    run_dir = tmp_path / "single"
    with pinned_threads(LAUNCH_THREADS):
        Pipeline(parse_experiment(SPLIT, "test"), run_dir, progress=False).run()
    assert recorded_threads(run_dir) == {LAUNCH_THREADS}
    return run_dir


def launch(commands: list[list[str]]) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": str(LAUNCH_THREADS), "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]


def experiment_file(tmp_path: Path, run_dir: Path) -> Path:
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump({**SPLIT, "output_dir": str(run_dir)}))
    return path


def chunk_counts(run_dir: Path) -> dict[str, dict[str, int]]:
    """Per artifact: how many chunks each process computed (from its manifest)."""
    counts = {}
    for manifest in sorted((run_dir / "artifacts").glob("*/*/manifest.json")):
        chunks = json.loads(manifest.read_text()).get("chunks")
        if chunks:
            counts[manifest.parent.parent.name + ":" + manifest.parent.name.rsplit("-", 1)[0]] = \
                chunks["computed_by_process"]
    return counts


@pytest.mark.slow  # a 2-process launch and a single-process run, each through training
def test_two_processes_store_the_single_process_bytes(tmp_path: Path) -> None:
    reference = per_prompt_files(single_process(tmp_path))
    run_dir = tmp_path / "ddp"
    launch([[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
             "-m", "harness", "run", str(experiment_file(tmp_path, run_dir)), "--quiet"]])
    assert per_prompt_files(run_dir) == reference
    assert recorded_threads(run_dir) == {LAUNCH_THREADS}
    counts = chunk_counts(run_dir)
    # Samples and every source (those reading the samples and the teacher's own samples of the 5 prompts):
    # 3 chunks each, 2 on the main process and 1 on the other.
    sources = {p.name.rsplit("-", 1)[0] for p in (run_dir / "artifacts" / "signal").iterdir()}
    assert sources == {"student_logprobs", "mcq_preference", "teacher_topk", "teacher_samples"}
    assert len(counts) == 1 + len(sources) and all(by == {"0": 2, "1": 1} for by in counts.values()), counts
    assert not list((run_dir / "work").glob("*/*/chunks")), "chunks are removed once merged"
    # Rows are evaluated in parallel: row i's answers and judgements by process i mod 2.
    manifests = [json.loads(m.read_text()) for m in (run_dir / "artifacts").glob("[aj]*/*/manifest.json")]
    by_process = {m["stage"] + ":" + m["label"]: m["computed_by_process"] for m in manifests}
    assert len(by_process) == 2 * 6  # answers and judgements of 6 rows
    assert by_process["judgements:teacher-alpaca_eval2"] == 0 and by_process["answers:dpo-s0-alpaca_eval2"] == 1



@pytest.mark.slow  # two launchers (nodes) and a single-process run
def test_two_nodes_on_loopback_store_the_single_process_bytes(tmp_path: Path) -> None:
    reference = per_prompt_files(single_process(tmp_path))
    run_dir, port = tmp_path / "nodes", free_port()
    path = experiment_file(tmp_path, run_dir)
    launch([[sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
             "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "harness", "run", str(path), "--quiet"]
            for rank in (0, 1)])
    assert per_prompt_files(run_dir) == reference
    assert all(by == {"0": 2, "1": 1} for by in chunk_counts(run_dir).values())


def test_a_process_killed_mid_stage_recomputes_only_its_unfinished_chunks(tmp_path: Path, monkeypatch: Any) -> None:
    """Process 1 of 2 owns chunks 1 and 3 of 4 (chunk size 1); it dies inside chunk 3. Restarted, it samples
    chunk 3 only; the main process then samples chunks 0 and 2 and merges: the single-process bytes."""
    from harness.stages import data as data_stages

    data = {**SPLIT, "prompts": {**SPLIT["prompts"], "count": 4}, "data_parallel": {"chunk": 1}}
    exp = parse_experiment(data, "test")
    single = Pipeline(exp, tmp_path / "single", progress=False)
    for step in single.plan()[:2]:
        single._run_step(step)  # prompts, samples
    real = data_stages.run_samples
    calls: list[str] = []

    def run_samples(exp: Any, prompts: list[dict[str, Any]], generator: Any, out: Path) -> dict[str, Any]:
        calls.append(prompts[0]["prompt_id"])
        if os.environ.get("RANK") == "1" and len(calls) == 2 and os.environ.get("DIE") == "1":
            raise KeyboardInterrupt  # killed mid-chunk: nothing of chunk 3 is kept
        return real(exp, prompts, generator, out)

    monkeypatch.setattr(data_stages, "run_samples", run_samples)
    run_dir = tmp_path / "split"
    main = Pipeline(exp, run_dir, progress=False)
    main._run_step(main.plan()[0])  # the prompts (main process only)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("DIE", "1")
    worker = Pipeline(exp, run_dir, progress=False)
    samples = worker.build_plan().samples
    with pytest.raises(KeyboardInterrupt):
        samples.run(tmp_path / "scratch")
    prompt_ids = [p["prompt_id"] for p in samples.prompts.read()]
    assert calls == [prompt_ids[1], prompt_ids[3]]
    monkeypatch.setenv("DIE", "0")
    calls.clear()
    samples = Pipeline(exp, run_dir, progress=False).build_plan().samples
    assert samples.run(tmp_path / "scratch") is None  # a worker stores nothing itself
    assert calls == [prompt_ids[3]]  # its finished chunk 1 was kept
    monkeypatch.setenv("RANK", "0")
    calls.clear()
    main = Pipeline(exp, run_dir, progress=False)
    main._run_step(main.build_plan().samples)
    assert calls == [prompt_ids[0], prompt_ids[2]]
    merged = main.build_plan().samples.artifact
    assert merged.key == single.build_plan().samples.artifact.key  # the launch is not an input
    assert merged.file("samples.jsonl").read_bytes() == single.build_plan().samples.artifact.file(
        "samples.jsonl").read_bytes()
    assert merged.manifest()["chunks"]["computed_by_process"] == {"0": 2, "1": 2}
