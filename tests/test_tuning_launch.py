"""Tuning trials in parallel under a launch: trial i trained ALONE by process i mod N (harness.training.solo),
not data-parallel by all, storing the bytes one process stores. Two CPU processes (torchrun, gloo) against
one process, both at one thread per process (bitwise equality on CPU holds only at equal thread counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.experiments import small_experiment
from test_data_parallel import free_port

TUNED = small_experiment(
    "tune-launch", prompts=4, samples=2, sample_tokens=4, answer_tokens=4,
    methods=[{"name": "sft", "search": {"optimizer.learning_rate": [1e-4, 1e-2]}},
             {"name": "dpo", "params": {"preference": "teacher_logprob"},
              "search": {"optimizer.learning_rate": [1e-4, 1e-2]}}],
    budget={"micro_batch": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0},
    tuning={"trials": 2, "select_on": {"benchmark": "teacher_agreement", "metric": "rank_agreement", "subset": 2}},
)
TUNED["benchmarks"] = [{"name": "teacher_agreement", "subset": 2, "max_new_tokens": 4,
                        "params": {"n": 2, "candidate_max_new_tokens": 4}}]


def run(tmp_path: Path, name: str, launcher: list[str]) -> Path:
    run_dir = tmp_path / name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TUNED, "output_dir": str(run_dir)}))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*launcher, "-m", "harness", "run", str(path), "--quiet"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def trained(run_dir: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (run_dir / "artifacts" / "train").glob("*/model.safetensors")}


@pytest.mark.slow  # a 2-process launch and a single-process run of a tuned experiment
def test_trials_run_alone_one_per_process_and_store_the_single_process_bytes(tmp_path: Path) -> None:
    single = run(tmp_path, "single", [sys.executable])
    launched = run(tmp_path, "launch", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                        f"--master_port={free_port()}"])
    reference = trained(single)
    assert len(reference) == 4  # 2 trials x 2 methods, each the first seed's test row: nothing trained twice
    assert trained(launched) == reference
    by_process = {}
    for manifest in (launched / "artifacts" / "train").glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        by_process[manifest.parent.name] = data.get("computed_by_process")
    assert sorted(by_process.values()) == [0, 0, 1, 1], by_process  # trial i on process i mod 2, alone
    assert _same_choice(single, launched)


def _same_choice(a: Path, b: Path) -> bool:
    """Selections record wall times too: compare what was selected and the dev scores."""
    def read(run_dir: Path) -> list[tuple[object, list[object]]]:
        out = []
        for p in sorted((run_dir / "artifacts" / "selection").glob("*/selection.json")):
            sel = json.loads(p.read_text())
            out.append((sel["selected_settings"], [t["value"] for t in sel["trials"]]))
        return out
    return read(a) == read(b)
