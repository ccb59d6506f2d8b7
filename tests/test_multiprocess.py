"""Data-parallel training, run for real on CPU: two processes (torchrun, gloo) against one.

The budget fixes prompts per optimizer step over all processes, so two processes with 2 micro-batches
each must train exactly what one process accumulating 4 does: same weights (to float rounding of the
gradient all-reduce), losses, grad norms and token counts. And a two-process run killed mid-training
resumes to the uninterrupted two-process result.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "ddp_train.py"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(out: Path, processes: int, *extra: str) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
           f"--master_port={free_port()}", str(HELPER), str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def outputs(out: Path) -> tuple[dict[str, torch.Tensor], list[dict], dict]:
    rows = [json.loads(line) for line in (out / "out" / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(out / "out" / "model.safetensors")), rows, json.loads((out / "out" / "accounting.json").read_text())


def test_two_processes_train_what_one_process_accumulating_trains(tmp_path):
    launch(tmp_path / "single", 1)
    launch(tmp_path / "ddp", 2)
    w1, rows1, acc1 = outputs(tmp_path / "single")
    w2, rows2, acc2 = outputs(tmp_path / "ddp")
    assert (acc1["num_processes"], acc2["num_processes"]) == (1, 2)
    for key in ("optimizer_steps", "prompts_seen", "student_backward_tokens", "micro_batches"):
        assert acc1[key] == acc2[key], key
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert r1["tokens"] == r2["tokens"]
        assert r1["loss"] == pytest.approx(r2["loss"], abs=1e-6)
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], abs=1e-6)
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-6, rtol=0, msg=name)


def test_two_process_run_killed_mid_training_resumes_to_the_uninterrupted_result(tmp_path):
    launch(tmp_path / "whole", 2)
    launch(tmp_path / "killed", 2, "1")  # stops after step 1, leaving its checkpoint
    assert not (tmp_path / "killed" / "out" / "model.safetensors").exists()
    launch(tmp_path / "killed", 2)
    w_whole, rows_whole, _ = outputs(tmp_path / "whole")
    w_resumed, rows_resumed, acc = outputs(tmp_path / "killed")
    assert [r["loss"] for r in rows_resumed] == [r["loss"] for r in rows_whole]
    assert acc["optimizer_steps"] == 3
    for name in w_whole:
        assert torch.equal(w_resumed[name], w_whole[name]), name


def test_pipeline_under_two_processes_stores_what_one_process_stores(tmp_path):
    """`torchrun -m harness run`: the main process alone samples, scores and evaluates (no duplicated
    work racing on the same artifacts); both processes train. Same artifacts as a single-process run."""
    import yaml
    from helpers.experiments import PIPELINE
    from helpers.threads import LAUNCH_THREADS, pinned_threads

    from harness.config import parse_experiment
    from harness.pipeline import Pipeline

    methods = [{"name": "sft"}, {"name": "pad", "params": {"mcq_filter": False}}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**PIPELINE, "methods": methods, "output_dir": str(tmp_path / "ddp")}))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", "-m", "harness", "run", str(path), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("leaderboard.json") == 1  # --quiet: the main process's report paths; workers print nothing

    single = Pipeline(parse_experiment({**PIPELINE, "methods": methods}, "test"), tmp_path / "single", progress=False)
    with pinned_threads(LAUNCH_THREADS):  # equal bytes need the launch's thread count (OMP_NUM_THREADS=1)
        single.run()
    ddp = Pipeline(parse_experiment({**PIPELINE, "methods": methods}, "test"), tmp_path / "ddp", progress=False)
    assert all(step.done for step in ddp.plan()) and (tmp_path / "ddp" / "report.html").is_file()
    for stage_dir in sorted((tmp_path / "single" / "artifacts").iterdir()):
        assert sorted(p.name for p in stage_dir.iterdir()) == \
            sorted(p.name for p in (tmp_path / "ddp" / "artifacts" / stage_dir.name).iterdir()), stage_dir.name
    assert (single.build_plan().samples.artifact.file("samples.jsonl").read_text()
            == ddp.build_plan().samples.artifact.file("samples.jsonl").read_text())
    for row in ddp.rows():
        if row.train is None:
            continue
        assert json.loads(row.train.file("accounting.json").read_text())["num_processes"] == 2
        reference = load_file(str(single.store.artifact("train", row.train.label, row.train.inputs).path
                                  / "model.safetensors"))
        for name, tensor in load_file(str(row.train.file("model.safetensors"))).items():
            torch.testing.assert_close(tensor, reference[name], atol=1e-5, rtol=0, msg=f"{row.train.label}:{name}")
