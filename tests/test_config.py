"""Experiment files: valid presets load; each kind of bad file gives one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import load_experiment, parse_experiment
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = {
    "name": "t",
    "teacher": {"model": "tiny:llama", "seed": 1},
    "student": {"model": "tiny:llama"},
    "methods": [{"name": "sft"}],
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_minimal_experiment_fills_defaults(tmp_path):
    exp = load_experiment(write(tmp_path, MINIMAL))
    assert exp.sampling.n == 4 and exp.sampling.temperature == 1.0 and exp.sampling.top_p == 0.95
    assert exp.budget.effective_batch == 8 and exp.seeds == (0,)
    assert exp.run_dir() == Path("runs/t")


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    bad = {**MINIMAL, "budget": {"epochs": 1, "learnin_rate": 1e-5}}
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert str(path) in msg and "budget.learnin_rate" in msg and "learning_rate" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'teacher_model'.*allowed keys: .*teacher"):
        load_experiment(write(tmp_path, {**MINIMAL, "teacher_model": "x"}))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"sampling\.n: .*'four'"):
        load_experiment(write(tmp_path, {**MINIMAL, "sampling": {"n": "four"}}))


def test_unknown_method_lists_known_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, {**MINIMAL, "methods": [{"name": "magic"}]}))
    msg = str(err.value)
    assert "methods.0.name" in msg and "'magic'" in msg and "pad" in msg and "sft" in msg


def test_bad_method_params_are_caught_by_the_plugin_schema(tmp_path):
    with pytest.raises(ConfigError, match=r"methods\.0 \(pad\)\.params.*unknown key 'betta'"):
        load_experiment(write(tmp_path, {**MINIMAL, "methods": [{"name": "pad", "params": {"betta": 3}}]}))


def test_unknown_benchmark_and_judge(tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark 'alpaca'"):
        load_experiment(write(tmp_path, {**MINIMAL, "benchmarks": [{"name": "alpaca"}]}))
    with pytest.raises(ConfigError, match="unknown judge 'gpt'"):
        load_experiment(write(tmp_path, {**MINIMAL, "judge": {"backend": "gpt"}}))


def test_cross_field_rules(tmp_path):
    with pytest.raises(ConfigError, match="multiple of"):
        load_experiment(write(tmp_path, {**MINIMAL, "budget": {"effective_batch": 6, "micro_batch": 4}}))
    with pytest.raises(ConfigError, match="candidates"):
        load_experiment(write(tmp_path, {**MINIMAL, "sampling": {"n": 5, "candidates": 4}}))
    dup = {**MINIMAL, "methods": [{"name": "sft"}, {"name": "sft"}]}
    with pytest.raises(ConfigError, match="duplicate row names"):
        load_experiment(write(tmp_path, dup))


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="missing required key 'teacher'"):
        parse_experiment({k: v for k, v in MINIMAL.items() if k != "teacher"}, "x.yaml")


@pytest.mark.parametrize("preset", ["tiny.yaml", "smol.yaml"])
def test_shipped_presets_validate(preset):
    exp = load_experiment(ROOT / "leaderboards" / preset)
    assert exp.methods and exp.benchmarks
