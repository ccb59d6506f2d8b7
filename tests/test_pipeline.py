"""The cached pipeline end to end on tiny models: caching, resume, selective re-training, clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.experiments import PIPELINE, pipeline_experiment
from safetensors.torch import load_file

from harness.errors import HarnessError
from harness.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]

def trained_weights(pipe: Pipeline) -> dict[str, dict[str, torch.Tensor]]:
    return {row.train.label: load_file(str(row.train.path / "model.safetensors"))
            for row in pipe.rows() if row.train is not None}


@pytest.mark.slow  # end to end: the whole pipeline, three methods, run twice
def test_second_run_recomputes_nothing(tmp_path, monkeypatch):
    exp = pipeline_experiment()
    first = Pipeline(exp, tmp_path, progress=False)
    first.run()
    assert all(step.done for step in first.plan())
    for name in ("leaderboard.json", "leaderboard.csv", "LEADERBOARD.md", "report.html", "results.json"):
        assert (tmp_path / name).is_file(), name

    import harness.models.sources as sources

    def no_loading(*args, **kwargs):
        raise AssertionError("a cached rerun must not load any model")

    monkeypatch.setattr(sources, "load_model", no_loading)
    started = time.time()
    second = Pipeline(exp, tmp_path, progress=False)
    second.run()
    assert time.time() - started < 30
    assert "to run" not in second.describe_plan()


@pytest.mark.slow  # end to end: the whole pipeline, three methods, run twice
def test_changing_one_method_retrains_only_that_method(tmp_path):
    Pipeline(pipeline_experiment(), tmp_path, progress=False).run()
    changed = pipeline_experiment(methods=[{"name": "pad", "params": {"mcq_filter": False, "beta": 5.0}},
                                           {"name": "sft"}, {"name": "dpo"}])
    plan = {(s.stage, s.label): s.done for s in Pipeline(changed, tmp_path, progress=False).plan()}
    to_run = sorted(k for k, done in plan.items() if not done)
    assert ("train", "pad-seed0") in to_run
    assert all(label.startswith("pad") for _, label in to_run), to_run
    assert plan[("train", "sft-seed0")] and plan[("train", "dpo-seed0")] and plan[("samples", "samples")]


@pytest.mark.slow  # end to end: the whole pipeline, three methods, run twice
def test_interrupted_training_resumes_to_the_same_artifacts(tmp_path, monkeypatch):
    exp = pipeline_experiment()
    reference = Pipeline(exp, tmp_path / "reference", progress=False)
    reference.run()

    import harness.training.trainer as trainer

    real_train = trainer.train
    calls = {"n": 0}

    def killed_after_one_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second method is killed mid-training
            real_train(*args, **{**kwargs, "stop_after_steps": 1})
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trainer, "train", killed_after_one_step)
    interrupted = Pipeline(exp, tmp_path / "run", progress=False)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    monkeypatch.setattr(trainer, "train", real_train)
    finished_before = {s.artifact.path: s.artifact.manifest()["finished_at"]
                       for s in interrupted.plan() if s.done}
    assert len(finished_before) >= 4  # prompts, samples, signals, trainset, first method

    resumed = Pipeline(exp, tmp_path / "run", progress=False)
    resumed.run()
    artifacts = {s.artifact.path: s.artifact for s in resumed.plan()}
    assert all(s.done for s in resumed.plan())
    for path, finished_at in finished_before.items():  # finished stages were not redone
        artifact = artifacts[path]
        manifest = artifact.manifest()
        assert artifact.done and manifest["files"], path  # stored whole: its manifest lists its files
        assert all((path / name).is_file() for name in manifest["files"]), path
        assert manifest["finished_at"] == finished_at, path
    ref_w, got_w = trained_weights(reference), trained_weights(resumed)
    assert ref_w.keys() == got_w.keys()
    for label in ref_w:
        for name, tensor in ref_w[label].items():
            torch.testing.assert_close(got_w[label][name], tensor, atol=1e-6, rtol=0, msg=f"{label}:{name}")


def test_dry_run_plan_loads_nothing(tmp_path, monkeypatch):
    import harness.models.sources as sources

    monkeypatch.setattr(sources, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    text = Pipeline(pipeline_experiment(), tmp_path, progress=False).describe_plan()
    assert "to run" in text and "train" in text and "pad-seed0" in text


def test_missing_model_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exp = pipeline_experiment(student={"model": "no-such-org/no-such-model"})
    with pytest.raises(HarnessError, match="no-such-org/no-such-model"):
        Pipeline(exp, tmp_path, progress=False).run()


def test_cli_run_validate_and_errors(tmp_path, capsys):
    from harness.cli import main

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**PIPELINE, "output_dir": str(tmp_path / "out")}))
    assert main(["validate", str(path)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "to run" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**PIPELINE, "methods": [{"name": "nope"}]}))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "Traceback" not in err


@pytest.mark.slow
def test_tiny_preset_runs_every_method_and_benchmark(tiny_preset_run):
    exp, results, run_dir = tiny_preset_run
    rows = {r.row for r in results.rows}
    assert {m.row_name for m in exp.methods} <= rows and "teacher" in rows
    for row in results.rows:
        assert set(row.benchmarks) == {b.name for b in exp.benchmarks}
        if row.kind == "method":  # every method trained under the same budget
            assert row.accounting["optimizer_steps"] == results.rows[-1].accounting["optimizer_steps"] > 0
            assert row.accounting["prompts_seen"] == results.rows[-1].accounting["prompts_seen"]
    board = (run_dir / "LEADERBOARD.md").read_text()
    for method in exp.methods:
        assert method.row_name in board


def test_gsm8k_from_local_files_runs_through_the_pipeline(tmp_path):
    """GSM8K has no offline source here; with local files in its format it runs like any benchmark."""
    import json

    data = tmp_path / "gsm8k_test.jsonl"
    items = [{"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
              "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
             {"question": "A box holds 6 eggs. How many eggs are in 2 boxes?", "answer": "6 * 2 = 12\n#### 12"}]
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    exp = pipeline_experiment(methods=[{"name": "sft"}],
                              benchmarks=[{"name": "gsm8k", "subset": 2, "max_new_tokens": 6,
                                           "params": {"data_path": str(data), "num_fewshot": 0}}])
    results = Pipeline(exp, tmp_path / "run", progress=False).run()
    for row in results.rows:
        metrics = row.benchmarks["gsm8k"].metrics
        assert metrics["exact_match_strict"] == 0.0  # random tiny models never write "#### 7"
        assert "exact_match_flexible" in metrics and len(row.benchmarks["gsm8k"].per_item) == 2


def test_validate_finds_every_problem_that_would_fail_hours_later(tmp_path, capsys, monkeypatch):
    """All problems in one message, before any model is loaded or trained."""
    from harness.cli import main

    monkeypatch.delenv("PAD_HARNESS_TEST_MISSING_KEY", raising=False)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        **PIPELINE, "output_dir": str(tmp_path / "{nme}"), "generation_backend": "vlm",
        "benchmarks": [{"name": "alpaca_eval2", "subset": 900, "max_new_tokens": 4096},
                       {"name": "mt_bench", "subset": 1}],
        "judge": {"backend": "openai", "model": "official", "api_key_env": "PAD_HARNESS_TEST_MISSING_KEY"},
    }))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "5 problem(s)" in err  # one line per problem, naming all it affects
    assert "generation_backend" in err and "'vlm'" in err
    assert "output_dir" in err and "['nme']" in err
    assert err.count("PAD_HARNESS_TEST_MISSING_KEY") == 1  # one missing key: one line naming both benchmarks
    assert "benchmarks.0 (alpaca_eval2), benchmarks.1 (mt_bench) judge:" in err
    assert "max_new_tokens: 4096" in err and "context of 2048 tokens" in err
    assert "subset: 900 but the data has 805 items" in err
    # `run` stops on the same problems before loading anything.
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "pipe").exists()
