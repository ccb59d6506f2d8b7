"""A run directory that survives anything: one run per directory, damaged artifacts never used silently,
a damaged judge cache salvaged, and a run killed anywhere resuming to exactly the uninterrupted result."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import parse_experiment
from harness.errors import HarnessError
from harness.judges.base import JudgeRequest
from harness.judges.cache import CachedJudge
from harness.pipeline import Pipeline
from harness.rundir_lock import LOCK_NAME, RunDirBusyError, run_dir_lock

ROOT = Path(__file__).resolve().parents[1]
KILLED_RUN = ROOT / "tests" / "helpers" / "killed_run.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
VOLATILE = ("wall_time", "peak_memory", "time_s", "tokens_per_s", "mfu", "gpu_hours")


def small_config(**overrides: Any) -> dict[str, Any]:
    from helpers.experiments import PIPELINE

    budget = {k: v for k, v in PIPELINE["budget"].items() if k != "checkpoint_every"}
    return {**PIPELINE, "budget": budget, "methods": [{"name": "sft"}, {"name": "dpo"}], **overrides}


def outcome(run_dir: Path) -> dict[str, Any]:
    """What a run measured: every score and per-item result, and the leaderboard's cells, comparisons and
    answer flags (timings and memory left out: they differ between any two runs)."""
    results = json.loads((run_dir / "results.json").read_text())
    board = json.loads((run_dir / "leaderboard.json").read_text())
    scores = {f"{r['row']}|{r['seed']}|{name}": [b["metrics"], b["per_item"], b["answers"], b["truncated"]]
              for r in results["rows"] for name, b in r["benchmarks"].items()}
    cells = {r["row"]: {k: c["values"] for k, c in r["cells"].items() if not any(v in k for v in VOLATILE)}
             for r in board["rows"]}
    return {"scores": scores, "cells": cells, "comparisons": board["comparisons"],
            "answer_flags": board["answer_flags"]}


def weights(run_dir: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted((run_dir / "artifacts" / "train").glob("*/model.safetensors"))
            if not p.parent.name.startswith(".")}


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def one(run_dir: Path, pattern: str) -> Path:
    found = sorted((run_dir / "artifacts").glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def hold_lock_in_subprocess(run_dir: Path) -> subprocess.Popen[str]:
    code = ("import sys; from pathlib import Path; from harness.rundir_lock import run_dir_lock\n"
            "with run_dir_lock(Path(sys.argv[1])):\n    print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


# -- the run-directory lock --------------------------------------------------------------------------------
def test_second_run_is_refused_naming_the_holder_and_a_dead_holder_frees_it(tmp_path):
    holder = hold_lock_in_subprocess(tmp_path)
    try:
        with pytest.raises(RunDirBusyError) as err, run_dir_lock(tmp_path):
            pass
        message = str(err.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "wait" in message
        with run_dir_lock(tmp_path, take=False):  # a worker of a multi-process launch is not refused
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the OS releases the lock
        holder.wait()
    with run_dir_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: nobody is named as the holder


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small run (two methods, one judged benchmark), copied by each test that damages it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    Pipeline(parse_experiment(small_config(), "integrity"), run_dir, progress=False).run()
    return run_dir, outcome(run_dir), weights(run_dir)


def copy_of(finished: tuple[Path, Any, Any], tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    return run_dir


def rerun(run_dir: Path) -> Pipeline:
    pipe = Pipeline(parse_experiment(small_config(), "integrity"), run_dir, progress=False)
    pipe.run()
    return pipe


def test_workers_of_a_launch_are_not_refused_and_the_cli_refusal_is_one_line(finished, tmp_path, monkeypatch,
                                                                              capsys):
    run_dir = copy_of(finished, tmp_path)
    holder = hold_lock_in_subprocess(run_dir)
    try:
        from harness.pipeline import same_plan_everywhere
        from harness.processes import ProcessInfo

        # The main process of the launch publishes its plan (the worker checks it plans the same steps).
        main_plan = Pipeline(parse_experiment(small_config(), "integrity"), run_dir, progress=False).build_plan()
        same_plan_everywhere(main_plan, run_dir, ProcessInfo(rank=0, world_size=2))
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        Pipeline(parse_experiment(small_config(), "integrity"), run_dir, progress=False).run()  # all cached
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        from harness.cli import main

        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(small_config()))
        assert main(["run", str(path), "--run-dir", str(run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pad-harness: error:") and f"pid {holder.pid}" in err[0]
        assert main(["run", str(path), "--run-dir", str(run_dir), "--dry-run"]) == 0  # read only: no lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


@pytest.mark.slow  # end to end: two CLI runs in subprocesses
def test_two_concurrent_runs_one_finishes_the_other_refuses_and_the_dir_stays_valid(tmp_path):
    path = tmp_path / "exp.yaml"
    run_dir = tmp_path / "run"
    path.write_text(yaml.safe_dump({**small_config(methods=[{"name": "sft"}]), "output_dir": str(run_dir)}))
    cmd = [sys.executable, "-m", "harness", "run", str(path), "--quiet"]
    first = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:  # until the first one holds the run dir
        try:
            if json.loads((run_dir / LOCK_NAME).read_text())["pid"] == first.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    second = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("pad-harness: error:")]
    assert len(errors) == 1 and f"pid {first.pid} on host {socket.gethostname()}" in errors[0], second.stderr
    reference = outcome(run_dir)
    plan = subprocess.run([*cmd, "--dry-run"], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0 and "to run" not in plan.stdout and "cached" in plan.stdout, plan.stdout
    again = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert outcome(run_dir) == reference


# -- damaged artifacts ----------------------------------------------------------------------------------
def test_flipped_bytes_in_trained_weights_are_found_at_load_and_rebuilt(finished, tmp_path, caplog):
    run_dir = copy_of(finished, tmp_path)
    train = one(run_dir, "train/sft-seed0-*")
    flip_byte(train / "model.safetensors")
    for answers in (run_dir / "artifacts").glob("*/sft-s0-*"):  # its answers are asked again: weights load
        shutil.rmtree(answers)
    with caplog.at_level(logging.WARNING):
        rerun(run_dir)
    aside = one(run_dir, "train/.damaged-sft-seed0-*")
    assert "model.safetensors does not match its checksum" in caplog.text and aside.name in caplog.text
    assert weights(run_dir) == finished[2]  # rebuilt bit for bit
    assert outcome(run_dir) == finished[1]


def test_damage_in_a_multiprocess_launch_stops_with_one_message(finished, tmp_path, monkeypatch):
    run_dir = copy_of(finished, tmp_path)
    train = one(run_dir, "train/sft-seed0-*")
    flip_byte(train / "model.safetensors")
    for answers in (run_dir / "artifacts").glob("*/sft-s0-*"):
        shutil.rmtree(answers)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HarnessError) as err:
        rerun(run_dir)
    assert str(train) in str(err.value) and "delete that directory and rerun" in str(err.value)
    assert train.is_dir()  # left where it is for the user


def test_truncated_files_are_not_done_and_are_rebuilt(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    model = one(run_dir, "train/dpo-seed0-*") / "model.safetensors"
    with model.open("r+b") as fh:
        fh.truncate(model.stat().st_size // 2)
    answers = one(run_dir, "answers/sft-s0-*") / "answers.jsonl"
    answers.write_text(answers.read_text()[:10])
    pipe = Pipeline(parse_experiment(small_config(), "integrity"), run_dir, progress=False)
    assert {(s.stage, s.label) for s in pipe.plan() if not s.done} == {("train", "dpo-seed0"),
                                                                       ("answers", "sft-s0-alpaca_eval2")}
    pipe.run()
    assert one(run_dir, "train/.damaged-dpo-seed0-*") and one(run_dir, "answers/.damaged-sft-s0-*")
    assert weights(run_dir) == finished[2]
    assert outcome(run_dir) == finished[1]


def test_damaged_judgements_signals_and_judge_cache_are_rebuilt(finished, tmp_path, caplog):
    run_dir = copy_of(finished, tmp_path)
    flip_byte(one(run_dir, "judgements/teacher-alpaca_eval2-*") / "judgements.jsonl")
    flip_byte(one(run_dir, "signal/student_logprobs-*") / "values.json")
    shutil.rmtree(one(run_dir, "train/dpo-seed0-*"))  # dpo trains again: it reads the damaged signal
    cache = run_dir / "judge_cache.sqlite"
    with cache.open("r+b") as fh:
        fh.truncate(cache.stat().st_size * 2 // 3)
    with caplog.at_level(logging.WARNING):
        rerun(run_dir)
    assert one(run_dir, "judgements/.damaged-teacher-alpaca_eval2-*")
    assert one(run_dir, "signal/.damaged-student_logprobs-*")
    assert "judge cache" in caplog.text and "salvaged" in caplog.text
    assert list(run_dir.glob("judge_cache.sqlite.corrupt-*"))
    assert weights(run_dir) == finished[2]
    assert outcome(run_dir) == finished[1]


# -- the judge cache ------------------------------------------------------------------------------------
def _requests(n: int) -> list[JudgeRequest]:
    return [JudgeRequest.chat([{"role": "user", "content": f"q{i} " + "x" * (i * 97 % 3000)}]) for i in range(n)]


def _filled_cache(path: Path, n: int) -> None:
    from helpers.judges import CountingJudge

    with CachedJudge(CountingJudge(), path) as judge:
        judge.complete(_requests(n))
    with sqlite3.connect(path) as conn:  # everything into the main file, as after a clean close
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_damaged_judge_cache_is_salvaged_and_the_rest_asked_again(tmp_path, damage, caplog):
    from helpers.judges import CountingJudge

    path = tmp_path / "judge_cache.sqlite"
    _filled_cache(path, 200)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 3 // 5]
    elif damage == "flipped":
        for offset in range(len(data) // 2, len(data) // 2 + 3 * 4096, 5):
            data[offset] ^= 0xFF
    else:
        data = bytearray(os.urandom(len(data)))
    path.write_bytes(bytes(data))
    inner = CountingJudge()
    with caplog.at_level(logging.WARNING), CachedJudge(inner, path) as judge:
        kept = len(judge)
        out = judge.complete(_requests(200))
    assert [r.text for r in out] == [r.messages[-1][1].upper() for r in _requests(200)]
    assert len(inner.seen) == 200 - kept and judge.cache_hits == kept
    if damage != "garbage":
        assert 0 < kept < 200
    assert len([r for r in caplog.records if "judge cache" in r.getMessage()]) == 1
    assert len(list(tmp_path.glob("judge_cache.sqlite.corrupt-*"))) == 1
    with CachedJudge(CountingJudge(), path) as reopened:
        assert len(reopened) == 200


# -- killed anywhere, resumed: the same result -----------------------------------------------------------
KILL_POINTS = [
    "start:prompts/prompts",
    "commit:samples/samples",
    "commit:signal/teacher_topk",
    "start:trainset/trainset",
    "loss:pad:2",  # mid-training
    "commit:train/dpo-seed0",
    "stored:train/gkd-seed0",
    "commit:answers/kd-s0-mt_bench",
    "judge:3",  # mid-judging: some answers in the judge cache, the judgements artifact not written
    "report",
]


@pytest.mark.slow
def test_run_killed_at_ten_points_resumes_to_the_uninterrupted_result(tmp_path):
    preset = ROOT / "leaderboards" / "tiny.yaml"

    def launch(point: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(KILLED_RUN), point, "run", str(preset), "--run-dir",
                               str(run_dir), "--quiet"], env=ENV, cwd=ROOT, capture_output=True, text=True,
                              timeout=900)

    reference = launch("none", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    for point in KILL_POINTS:
        killed = launch(point, tmp_path / "run")
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-3000:])
    resumed = launch("none", tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outcome(tmp_path / "run") == outcome(tmp_path / "reference")
    got, want = weights(tmp_path / "run"), weights(tmp_path / "reference")
    assert len(want) == 9 and got == want  # every trained student, bit for bit
    left = [p for p in (tmp_path / "run" / "artifacts").glob("*/.*")]
    assert not left, left  # no temp dir left behind, nothing found damaged
