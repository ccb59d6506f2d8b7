"""Results sent to W&B (offline), TensorBoard and MLflow (a file store), each read back with its own reader.

The results are the hand-made sample (harness.report.sample) plus an external row, a tuned method and tiny
answers/judgements artifacts written here, so no model runs; one test runs the tiny pipeline end to end to
see the hook and the label-based training run names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.config import LoggingConfig
from harness.interop.export import row_folders
from harness.report import write_reports
from harness.report.sample import sample_results
from harness.results import RowResult, RunResults
from harness.tracking import track_run
from harness.tracking.content import tracked_run
from harness.tracking.names import row_run_names, training_run_name

NAMES = ["teacher", "student-untrained", "pad-seed0", "pad-seed1", "dpo-seed0", "dpo-seed1", "zephyr"]
GROUP = "sample-sample-h"  # experiment name + the first 8 characters of its hash ("sample-hash")
ITEMS = 4  # answers written per benchmark (the trackers take the first 3)


def _answers(bench: str, key: str, row: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An answer record and its judgement records, shaped as each benchmark writes them."""
    text = f"{row} answers {key}"
    if bench == "alpaca_eval2":
        return ({"id": key, "instruction": f"Say {key}.", "output": text},
                [{"id": key, "instruction": f"Say {key}.", "output_2": text, "preference": 2.0,
                  "raw_completion": "m" * 100}])
    if bench == "arena_hard":
        games = [{"score": "A>B", "judgment": "long reasoning " * 20, "user_prompt": f"<|User Prompt|>\nAsk {key}"},
                 {"score": "B>A", "judgment": "more reasoning", "user_prompt": f"<|User Prompt|>\nAsk {key}"}]
        return {"id": key, "category": "hard", "output": text}, [{"id": key, "category": "hard", "games": games}]
    if bench == "mt_bench":
        return ({"id": key, "category": "writing", "output": [text, text + " again"]},
                [{"id": key, "turn": t, "score": 7.0 + t, "judgment": "Rating: [[8]] " * 10,
                  "user_prompt": f"[Question]\nWrite {key}"} for t in (1, 2)])
    return {"id": key, "output": text + " #### 7"}, [{"id": key, "target": "7", "strict_match": 1.0}]


def _write_artifacts(results: RunResults, run_dir: Path) -> None:
    for i, folder in row_folders(results.rows).items():
        row = results.rows[i]
        for bench, result in row.benchmarks.items():
            ids = list(dict.fromkeys(str(p["id"]) for p in result.per_item))[:ITEMS]
            answers, judgements = [], []
            for key in ids:
                answer, judged = _answers(bench, key, row.row)
                answers.append(answer)
                judgements += judged
            for kind, records in (("answers", answers), ("judgements", judgements)):
                rel = f"artifacts/{kind}/{folder}-{bench}"
                (run_dir / rel).mkdir(parents=True)
                (run_dir / rel / f"{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
                row.artifacts.setdefault(kind, {})[bench] = rel


@pytest.fixture
def sample_run(tmp_path) -> tuple[RunResults, Path, dict[str, Path]]:
    """Sample results (pad tuned, an external row), their artifacts and their reports, in tmp_path/run."""
    results = sample_results(methods=("pad", "dpo"), seeds=(0, 1))
    results.experiment["methods"][0]["params"] = {"beta": 0.5}
    teacher = results.rows[0]
    results.rows.append(RowResult("zephyr", "external", "HuggingFaceH4/zephyr-7b-beta",
                                  benchmarks=dict(teacher.benchmarks), external={"model": "zephyr-7b-beta"}))
    results.tuning["pad"] = {
        "trials": [{"trial": 0, "settings": {"optimizer.learning_rate": 1e-6}, "value": 41.0, "ci95": [38.0, 44.0]},
                   {"trial": 1, "settings": {"optimizer.learning_rate": 3e-6}, "value": 39.0, "ci95": [36.0, 42.0]}],
        "selected": 0, "dev_benchmark": "alpaca_eval2", "metric": "win_rate"}
    for row in results.rows:
        if row.kind == "method":
            row.optimizer = {"learning_rate": 1e-6 if row.row == "pad" else 5e-7, "lr_scheduler": "linear"}
            row.tuning = ({"tuned": True, "trials": 2, "selected_settings": {"optimizer.learning_rate": 1e-6}}
                          if row.row == "pad" else {"tuned": False})
    run_dir = tmp_path / "run"
    _write_artifacts(results, run_dir)
    results.save(run_dir / "results.json")
    return results, run_dir, write_reports(results, run_dir, n_boot=200)


def _scores(row: RowResult) -> dict[str, float]:
    return {f"{b}/{k}": float(v) for b, r in row.benchmarks.items() for k, v in r.metrics.items()
            if isinstance(v, int | float)}


# ------------------------------------------------------------------------------------------ what is sent
def test_run_names_are_the_row_labels_with_a_seed_where_a_label_has_several(sample_run) -> None:
    results, _, _ = sample_run
    assert row_run_names(results.rows) == NAMES
    assert training_run_name("pad", 1, [0, 1]) == "pad-seed1"
    assert training_run_name("pad (beta 0.5)", 0, [0]) == "pad-beta-0.5"  # one seed: the label alone


def test_each_row_carries_its_scores_config_tuning_and_answer_samples(sample_run) -> None:
    results, run_dir, paths = sample_run
    run = tracked_run(results, run_dir, paths)
    rows = {r.name: r for r in run.rows}
    assert list(rows) == NAMES and run.group == GROUP
    assert rows["pad-seed1"].scores == _scores(results.rows[3]) and len(rows["pad-seed1"].scores) == 16
    pad = rows["pad-seed1"].config
    assert pad["method"] == "pad" and pad["seed"] == 1 and pad["params.beta"] == 0.5
    assert pad["optimizer.learning_rate"] == 1e-6 and pad["tuning.status"] == "tuned (2 trials)"
    assert pad["tuning.selected.optimizer.learning_rate"] == 1e-6
    assert rows["dpo-seed0"].config["tuning.status"] == "untuned" and rows["dpo-seed0"].tuning is None
    assert rows["zephyr"].config["external.model"] == "zephyr-7b-beta"
    assert [line[1] for line in rows["pad-seed0"].tuning.rows] == ["optimizer.learning_rate=1e-06",
                                                                   "optimizer.learning_rate=3e-06"]
    assert [line[0] for line in run.leaderboard.rows] == ["teacher", "student (untrained)", "pad", "dpo", "zephyr"]

    samples = {(s["benchmark"], s["id"]): s for s in rows["pad-seed1"].answer_samples.records()}
    assert len(samples) == 4 * 3  # three items of each benchmark
    alpaca = samples[("alpaca_eval2", "a0")]
    assert alpaca["prompt"] == "Say a0." and alpaca["answer"] == "pad answers a0"
    assert alpaca["score"] == results.rows[3].benchmarks["alpaca_eval2"].per_item[0]["score"]
    assert "preference=2.0" in alpaca["verdict"] and "mmm" not in alpaca["verdict"]  # text left out
    mt = samples[("mt_bench", "m0")]
    assert mt["answer"] == "[turn 1] pad answers m0\n\n[turn 2] pad answers m0 again"
    assert mt["verdict"] == "turn=1, score=8.0; turn=2, score=9.0" and mt["prompt"].endswith("Write m0")
    assert samples[("arena_hard", "h1")]["verdict"] == "category=hard, games=A>B, B>A"
    assert samples[("gsm8k", "g2")]["prompt"] == ""  # its artifacts hold no prompt


# ---------------------------------------------------------------------------------------------- W&B
def _wandb_records(path: Path) -> list[Any]:
    """W&B's offline run file (a LevelDB-style log of protobuf records), read with W&B's own protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_run_files(root: Path) -> list[Path]:
    return sorted(root.glob("wandb/offline-run-*/run-*.wandb"))


def _wandb_runs(root: Path) -> dict[str, dict[str, Any]]:
    runs = {}
    for run_file in _wandb_run_files(root):
        records = _wandb_records(run_file)
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        summary = {item.key: json.loads(item.value_json) for r in records
                   if r.WhichOneof("record_type") == "summary" for item in r.summary.update if item.key}
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        tables = sorted(p.name.split("_")[0] if not p.name.startswith("answer_samples") else "answer_samples"
                        for p in (run_file.parent / "files" / "media" / "table").glob("*.table.json"))
        runs[run.display_name] = {"id": run.run_id, "group": run.run_group, "summary": summary,
                                  "config": config, "tables": tables, "dir": run_file.parent}
    return runs


def test_wandb_offline_gets_one_run_per_row(sample_run, tmp_path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    results, run_dir, paths = sample_run
    for name, sub in (("WANDB_DIR", "wb"), ("WANDB_CONFIG_DIR", "wb-config"), ("WANDB_CACHE_DIR", "wb-cache"),
                      ("WANDB_DATA_DIR", "wb-data")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = LoggingConfig(wandb=True, wandb_project="pad-test")
    assert track_run(results, run_dir, config, paths) == []
    wandb.teardown()  # W&B's service writes the run files in the background: wait until it has
    runs = _wandb_runs(tmp_path / "wb")
    assert sorted(runs) == sorted(NAMES)
    for row, name in zip(results.rows, NAMES, strict=True):
        got = runs[name]
        assert got["group"] == GROUP
        assert {k: v for k, v in got["summary"].items() if "/" in k} == _scores(row)
        assert got["config"]["experiment_hash"] == "sample-hash" and got["config"]["kind"] == row.kind
        assert got["tables"] == (["answer_samples", "leaderboard", "tuning"] if row.row == "pad"
                                 else ["answer_samples", "leaderboard"])
    board = json.loads(next((runs["dpo-seed1"]["dir"] / "files/media/table").glob("leaderboard*")).read_text())
    assert [line[0] for line in board["data"]] == ["teacher", "student (untrained)", "pad", "dpo", "zephyr"]
    samples = json.loads(next((runs["teacher"]["dir"] / "files/media/table").glob("answer_samples*")).read_text())
    assert samples["columns"] == ["benchmark", "id", "prompt", "answer", "score", "verdict"]
    assert len(samples["data"]) == 12

    # The same results again: the same run ids (resumed), not a second set of runs.
    ids = {name: run["id"] for name, run in runs.items()}
    assert track_run(results, run_dir, config, paths) == []
    wandb.teardown()
    again = [run_file.name.removeprefix("run-").removesuffix(".wandb") for run_file in _wandb_run_files(tmp_path / "wb")]
    assert len(again) == 2 * len(NAMES) and set(again) == set(ids.values())


# --------------------------------------------------------------------------------------- TensorBoard
def _tensorboard(log_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    texts = {tag.removesuffix("/text_summary"): events.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
             for tag in events.Tags()["tensors"]}
    return scalars, texts


def test_tensorboard_gets_one_subdir_per_row(sample_run) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    results, run_dir, paths = sample_run
    config = LoggingConfig(tensorboard=True)
    assert track_run(results, run_dir, config, paths) == []
    assert track_run(results, run_dir, config, paths) == []  # rewritten, not doubled
    root = run_dir / "tensorboard" / "sample"
    assert sorted(p.name for p in root.iterdir()) == sorted(NAMES)
    for row, name in zip(results.rows, NAMES, strict=True):
        assert len(list((root / name).glob("events.*"))) == 1
        scalars, texts = _tensorboard(root / name)
        assert scalars == pytest.approx(_scores(row))
        assert sorted(texts) == sorted(["config", "leaderboard", "answer_samples"] + (["tuning"] if row.row == "pad"
                                                                                      else []))
        assert f"| kind | {row.kind} |" in texts["config"] and "sample-hash" in texts["config"]
        assert texts["leaderboard"] == paths["markdown"].read_text()
        assert f"{row.row} answers a0" in texts["answer_samples"]


# -------------------------------------------------------------------------------------------- MLflow
def test_mlflow_file_store_gets_one_run_per_row(sample_run, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    from mlflow.tracking import MlflowClient

    results, run_dir, paths = sample_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = LoggingConfig(mlflow=True)
    assert track_run(results, run_dir, config, paths) == []
    assert track_run(results, run_dir, config, paths) == []  # the same rows: the same runs, reused

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the reader opens the file store the run wrote
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("sample")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(NAMES)
    for row, name in zip(results.rows, NAMES, strict=True):
        got = runs[name]
        assert got.data.metrics == pytest.approx(_scores(row))
        assert got.data.tags["pad_harness.experiment_hash"] == "sample-hash"
        assert got.data.tags["pad_harness.row"] == row.row and got.data.params["kind"] == row.kind
        files = sorted(a.path for a in client.list_artifacts(got.info.run_id))
        assert files == ["answer_samples.json", "answer_samples.md", "leaderboard"] + (["tuning"] if row.row == "pad"
                                                                                        else [])
    pad = runs["pad-seed0"]
    assert pad.data.params["params.beta"] == "0.5" and pad.data.params["optimizer.learning_rate"] == "1e-06"
    assert pad.data.params["tuning.status"] == "tuned (2 trials)"
    board = client.download_artifacts(pad.info.run_id, "leaderboard/leaderboard.csv")
    assert Path(board).read_text() == paths["csv"].read_text()
    samples = json.loads(Path(client.download_artifacts(pad.info.run_id, "answer_samples.json")).read_text())
    assert len(samples["rows"]) == 12 and samples["rows"][0]["answer"] == "pad answers a0"


# ------------------------------------------------------------------------------------------ failures
@pytest.mark.parametrize("flag, modules, package", [("wandb", ["wandb"], "wandb"),
                                                    ("tensorboard", ["torch.utils.tensorboard"], "tensorboard"),
                                                    ("mlflow", ["mlflow", "mlflow.tracking"], "mlflow-skinny")])
def test_missing_tracker_package_is_one_warning_and_the_run_goes_on(sample_run, monkeypatch, flag, modules,
                                                                    package) -> None:
    results, run_dir, paths = sample_run
    for module in modules:  # an import of any of them now raises ImportError, as when it is not installed
        monkeypatch.setitem(sys.modules, module, None)
    notes = track_run(results, run_dir, LoggingConfig(**{flag: True}), paths)
    assert len(notes) == 1 and f"pip install {package}" in notes[0] and str(run_dir) in notes[0]


def test_a_failing_tracker_is_reported_not_raised(sample_run) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    results, run_dir, paths = sample_run
    notes = track_run(results, run_dir, LoggingConfig(mlflow=True, mlflow_tracking_uri="nosuchscheme://x"), paths)
    assert len(notes) == 1 and notes[0].startswith("mlflow could not record the results")


def test_nothing_turned_on_sends_nothing(sample_run) -> None:
    results, run_dir, paths = sample_run
    assert track_run(results, run_dir, LoggingConfig(), paths) == []
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "mlruns").exists()


# ------------------------------------------------------------------------------- the pipeline's hook
def test_pipeline_tracks_rows_and_names_training_logs_by_label(tmp_path) -> None:
    """Two labelled rows of one method, two seeds: four training logs, each under its row's name."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from helpers.experiments import small_experiment

    from harness.config import parse_experiment
    from harness.pipeline import Pipeline

    exp = parse_experiment(small_experiment("track", methods=[{"name": "sft", "label": "sft-a"},
                                                              {"name": "sft", "label": "sft-b",
                                                               "optimizer": {"learning_rate": 1e-3}}],
                                            budget={"max_steps": 1, "micro_batch": 1}, seeds=[0, 1],
                                            logging={"tensorboard": True}), "test")
    run_dir = tmp_path / "run"
    results = Pipeline(exp, run_dir, progress=False).run()
    training = sorted(p.name for p in (run_dir / "work" / "train").glob("*/tensorboard/*"))
    assert training == ["sft-a-seed0", "sft-a-seed1", "sft-b-seed0", "sft-b-seed1"]
    rows = sorted(p.name for p in (run_dir / "tensorboard" / "track").iterdir())
    assert rows == ["sft-a-seed0", "sft-a-seed1", "sft-b-seed0", "sft-b-seed1", "student-untrained", "teacher"]
    [row] = [r for r in results.rows if r.row == "sft-b" and r.seed == 1]
    scalars, texts = _tensorboard(run_dir / "tensorboard" / "track" / "sft-b-seed1")
    assert scalars == pytest.approx(_scores(row)) and "alpaca_eval2/n_total" in scalars
    assert "| optimizer.learning_rate | 0.001 |" in texts["config"]
