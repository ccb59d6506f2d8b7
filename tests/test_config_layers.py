"""Variants without copies: `extends:` files and `--set` overrides (harness.config_layers).

What can fail: a deep merge that merges lists or drops a base key, an override that addresses the wrong list
entry or silently creates a new one, a relative path read from the wrong folder, a cycle that recurses
forever, an error that is not one line, and a run that does not record what was overridden.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers.experiments import small_experiment

from harness.cli import main
from harness.config import load_experiment
from harness.config_layers import apply_overrides, deep_merge
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _base(tmp_path: Path) -> Path:
    data = small_experiment("base", methods=[{"name": "sft"}, {"name": "dpo", "params": {"beta": 0.1}},
                                             {"name": "dpo", "label": "dpo-hinge", "params": {"loss_type": "hinge"}}],
                            budget={"max_steps": 1, "micro_batch": 2})
    return _write(tmp_path / "base.yaml", data)


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "base"}
    assert deep_merge(base, {"a": {"y": 3}, "l": [9]}) == {"a": {"x": 1, "y": 3}, "l": [9], "s": "base"}
    assert base == {"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "base"}  # the base is not changed


def test_a_variant_file_holds_only_what_differs(tmp_path):
    _base(tmp_path)
    (tmp_path / "v").mkdir()
    variant = _write(tmp_path / "v" / "lr.yaml", {"extends": "../base.yaml", "name": "lr",
                                                  "budget": {"learning_rate": 2e-5}})
    exp = load_experiment(variant)
    assert exp.name == "lr" and exp.budget.learning_rate == 2e-5
    assert exp.budget.max_steps == 1 and exp.budget.micro_batch == 2  # the base's other budget keys stay
    assert [m.row_name for m in exp.methods] == ["sft", "dpo", "dpo-hinge"]
    assert exp.origin["extends"] == [str(tmp_path / "v" / "../base.yaml")]
    twice = _write(tmp_path / "v" / "twice.yaml", {"extends": "lr.yaml", "seeds": [0, 1]})
    exp = load_experiment(twice)
    assert exp.budget.learning_rate == 2e-5 and exp.seeds == (0, 1) and len(exp.origin["extends"]) == 2


def test_extends_errors_are_one_line(tmp_path):
    _write(tmp_path / "a.yaml", {"extends": "b.yaml", "name": "a"})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml", "name": "b"})
    with pytest.raises(ConfigError, match="cycle"):
        load_experiment(tmp_path / "a.yaml")
    _write(tmp_path / "c.yaml", {"extends": "missing.yaml"})
    with pytest.raises(ConfigError, match="relative to the file that extends it"):
        load_experiment(tmp_path / "c.yaml")


def test_set_addresses_list_entries_by_label_or_name_and_validates(tmp_path):
    path = _base(tmp_path)
    exp = load_experiment(path, ["budget.learning_rate=2e-5", "methods.dpo-hinge.params.beta=0.05",
                                 "methods.sft.optimizer.learning_rate=1e-4", "benchmarks.alpaca_eval2.subset=1",
                                 "methods.0.label=sft-a"])
    by_row = {m.row_name: m for m in exp.methods}
    assert exp.budget.learning_rate == 2e-5  # a YAML number, not the string "2e-5"
    assert by_row["dpo-hinge"].params == {"loss_type": "hinge", "beta": 0.05}
    assert by_row["dpo"].params == {"beta": 0.1}  # the unlabelled dpo is another entry
    assert by_row["sft-a"].optimizer.learning_rate == 1e-4
    assert exp.benchmarks[0].subset == 1
    assert exp.origin["overrides"][0] == "budget.learning_rate=2e-5"


@pytest.mark.parametrize(("assignment", "message"), [
    ("budget.learning_rate", "PATH=VALUE"),
    ("methods.magic.params.beta=1", "no entry of methods named 'magic'; its entries: sft, dpo, dpo-hinge"),
    ("methods.7.params.beta=1", "no index 7"),
    ("name.first=x", "not a mapping or list"),
    ("budget.learning_rate=fast", "budget.learning_rate"),  # the schema's own error
    ("budget.lerning_rate=1", "unknown key 'budget.lerning_rate'"),
])
def test_a_bad_override_is_one_line_that_says_what_to_do(tmp_path, assignment, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(_base(tmp_path), [assignment])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_two_entries_of_one_name_must_be_told_apart(tmp_path):
    data = {"methods": [{"name": "dpo"}, {"name": "dpo"}]}
    with pytest.raises(ConfigError, match="2 entries of methods named 'dpo'"):
        apply_overrides(data, ["methods.dpo.params.beta=1"])


def test_validate_and_dry_run_take_the_same_flags(tmp_path, capsys):
    path = _base(tmp_path)
    assert main(["validate", str(path), "--set", "seeds=[0, 1]"]) == 0
    assert main(["validate", str(path), "--set", "seeds=[0, 0]"]) == 2
    assert "--set seeds=[0, 0]" in capsys.readouterr().err  # the error names the override it came from
    assert main(["run", str(path), "--dry-run", "--run-dir", str(tmp_path / "run"),
                 "--set", "methods.sft.optimizer.learning_rate=1e-4"]) == 0


@pytest.mark.usefixtures("one_thread")
def test_a_run_records_its_overrides_and_its_resolved_experiment(tmp_path):
    from harness.pipeline import Pipeline

    path = _base(tmp_path)
    exp = load_experiment(path, ["methods=[{name: sft}]", "benchmarks.alpaca_eval2.subset=1"])
    results = Pipeline(exp, tmp_path / "run", source_file=str(path), progress=False).run()
    assert results.provenance["origin"]["overrides"] == ["methods=[{name: sft}]", "benchmarks.alpaca_eval2.subset=1"]
    again = load_experiment(tmp_path / "run" / "experiment.yaml")  # the run dir's copy is the resolved experiment
    assert again.model_dump() == exp.model_dump()
