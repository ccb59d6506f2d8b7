"""Disk use: checkpoints go once the trained model is stored, a run that cannot fit says so before
training, and a disk that fills up mid-run is one clear error that keeps every finished stage."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_tiny
from helpers.experiments import PIPELINE, pipeline_experiment
from helpers.training import MarginMethod, budget, make_groups
from safetensors import SafetensorError

import harness.diskspace as diskspace
from harness.errors import DiskFullError
from harness.pipeline import Pipeline, experiment_hash
from harness.training import checkpoint as ckpt
from harness.training import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ONE_METHOD = [{"name": "sft"}, {"name": "dpo"}]


def checkpoint_dirs(pipe: Pipeline) -> dict[str, bool]:
    return {row.train.label: ckpt.checkpoint_root(pipe.store.work_dir(row.train)).exists()
            for row in pipe.rows() if row.train is not None}


def test_checkpoints_are_deleted_once_the_model_is_stored_unless_kept(tmp_path):
    pipe = Pipeline(pipeline_experiment(methods=ONE_METHOD), tmp_path / "a", progress=False)
    pipe.run()
    assert checkpoint_dirs(pipe) == {"sft-seed0": False, "dpo-seed0": False}
    for row in pipe.rows():
        if row.train is not None:  # the stored artifact keeps the model and the training log
            assert (row.train.path / "model.safetensors").is_file()
            assert (row.train.path / "metrics.jsonl").is_file()

    # How checkpoints are stored is not part of any cache key: nothing is retrained for it.
    storage = {**PIPELINE["budget"], "checkpoint_every": 2, "keep_checkpoints": True}
    kept_exp = pipeline_experiment(methods=ONE_METHOD, budget=storage)
    assert "to run" not in Pipeline(kept_exp, tmp_path / "a", progress=False).describe_plan()
    assert experiment_hash(kept_exp) == experiment_hash(pipeline_experiment(methods=ONE_METHOD))  # one leaderboard

    kept = Pipeline(kept_exp, tmp_path / "b", progress=False)
    kept.run()
    assert checkpoint_dirs(kept) == {"sft-seed0": True, "dpo-seed0": True}
    assert {r.train.key for r in kept.rows() if r.train} == {r.train.key for r in pipe.rows() if r.train}


def test_estimated_sizes_match_the_files_written(tmp_path):
    student = make_tiny("llama", seed=0)  # tied embeddings: stored once, counted once
    model_bytes, checkpoint_bytes = ckpt.estimated_bytes(student.model)
    train(MarginMethod(), make_groups(8), student, budget(max_steps=1, checkpoint_every=1), 7, tmp_path / "work",
          tmp_path / "out", progress=False)
    latest = ckpt.latest_checkpoint(tmp_path / "work")
    assert latest is not None
    written = (latest / "model.safetensors").stat().st_size + (latest / "optimizer.safetensors").stat().st_size
    headers = 16 * 1024  # safetensors' JSON headers and AdamW's step counters: small, fixed per tensor
    assert 0 <= written - checkpoint_bytes < headers
    assert 0 <= (tmp_path / "out" / "model.safetensors").stat().st_size - model_bytes < headers


def test_training_that_cannot_fit_on_disk_fails_before_any_step(tmp_path, monkeypatch):
    student = make_tiny("llama", seed=0)
    model_bytes, checkpoint_bytes = ckpt.estimated_bytes(student.model)
    # checkpoint_every=1 over 4 steps: two kept checkpoints plus the one being written, plus the model.
    needed = model_bytes + 3 * checkpoint_bytes
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: needed - 1)
    with pytest.raises(DiskFullError, match=r"training 'test_margin' \(.*\) needs about .* GB free .* rerun"):
        train(MarginMethod(), make_groups(8), student, budget(max_steps=4, checkpoint_every=1), 7,
              tmp_path / "work", tmp_path / "out", progress=False)
    assert ckpt.latest_checkpoint(tmp_path / "work") is None and not (tmp_path / "out").exists()

    monkeypatch.setattr(diskspace, "free_bytes", lambda path: needed)
    result = train(MarginMethod(), make_groups(8), make_tiny("llama", seed=0), budget(max_steps=4, checkpoint_every=1),
                   7, tmp_path / "work", tmp_path / "out", progress=False)
    assert result.completed


def test_full_disk_mid_run_is_one_clear_error_and_keeps_finished_stages(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**PIPELINE, "methods": ONE_METHOD, "output_dir": str(tmp_path / "run")}))
    real_save = ckpt.save_checkpoint

    def disk_fills_during_dpo(work_dir, *args, **kwargs):
        if "dpo-seed0" in str(work_dir):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(work_dir, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", disk_fills_during_dpo)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "the disk filled up while writing train 'dpo-seed0'" in err and "Traceback" not in err

    pipe = Pipeline(pipeline_experiment(methods=ONE_METHOD), tmp_path / "run", progress=False)
    finished = {s.artifact.path: s.artifact.manifest()["finished_at"] for s in pipe.plan() if s.done}
    assert any(s.label == "sft-seed0" and s.done for s in pipe.plan())
    assert not any(s.label == "dpo-seed0" and s.done for s in pipe.plan())

    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)  # space freed: the rerun finishes the rest
    assert main(["run", str(path)]) == 0
    for art_path, finished_at in finished.items():
        assert json.loads((art_path / "manifest.json").read_text())["finished_at"] == finished_at
    assert all(s.done for s in pipe.plan())
