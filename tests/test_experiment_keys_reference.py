"""docs/experiment-keys.md is what `python -m harness.reference` generates: every schema and built-in plugin key
described, and each one's cache-key column decided by the probe or explained where it cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import Budget, Experiment
from harness.reference import cache_probe
from harness.reference.page import REGENERATE, render
from harness.reference.schema import builtin_plugins, experiment_keys, undescribed

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "experiment-keys.md"


@pytest.fixture(scope="module")
def probes() -> dict[str, cache_probe.Probe]:
    return cache_probe.probe_all(experiment_keys(), builtin_plugins())


def test_every_schema_and_params_field_has_a_description() -> None:
    missing = undescribed()
    assert not missing, (f"fields without a description: {missing}; give each a docstring under the field "
                         f"(the models set use_attribute_docstrings) and run `{REGENERATE}`")


def test_the_committed_page_is_the_generated_one() -> None:
    assert PAGE.is_file(), f"{PAGE} is missing: run `{REGENERATE}` from the repository root"
    if PAGE.read_text() != render():
        pytest.fail(f"{PAGE.relative_to(ROOT)} differs from what the code generates: run `{REGENERATE}` from the "
                    f"repository root and commit it", pytrace=False)


def test_every_key_is_probed_or_explained(probes) -> None:
    unexplained = [path for path, probe in probes.items() if not probe.tried and not probe.note]
    assert not unexplained, (f"the probe could not change {unexplained} to a value that plans: add a value to "
                             f"cache_probe.PROBE_VALUES, or say what the code does with it in cache_probe.NOT_PROBED")
    every_key = set(probes) | {key.path for key in experiment_keys()}
    stale = sorted(set(cache_probe.NOT_PROBED) - every_key)
    assert not stale, f"cache_probe.NOT_PROBED explains keys that do not exist: {stale}"
    unused = sorted(set(cache_probe.PROBE_VALUES) - every_key)
    assert not unused, f"cache_probe.PROBE_VALUES names keys that do not exist: {unused}"


def test_the_probe_agrees_with_the_rules_it_reads(probes) -> None:
    """The probe can fail: what it finds is what the cache-key code says, for keys whose rule is known."""
    for name in Budget.STORAGE_FIELDS:  # how training is stored: out of every key
        assert probes[f"budget.{name}"].stages == ()
    assert probes["budget.learning_rate"].stages == ("train", "answers", "judgements")
    for volatile in ("concurrency", "max_retries", "timeout_s", "api_key_env"):  # judges.choice._VOLATILE
        assert probes[f"judge.{volatile}"].stages == ()
    assert probes["judge.model"].stages == ("judgements",)
    assert probes["teacher.device_map"].stages == () and probes["teacher.offload"].stages == ()  # placement only
    assert probes["backends.vllm.gpu_memory_utilization"].stages == ()  # not a `result_params`
    assert probes["backends.vllm.dtype"].stages != ()
    assert probes["sampling.temperature"].stages[0] == "samples"
    for key in ("name", "output_dir", "setting", "logging.every"):
        assert probes[key].stages == () and probes[key].tried
    assert probes["seeds"].stages and not probes["seeds"].merge  # another seed trains again, merges as a row
    assert probes["prompts.count"].merge and not probes["methods[].label"].merge
    assert set(Experiment.model_fields) <= {path.split(".", 1)[0].removesuffix("[]") for path in probes} | {
        "teacher", "student", "prompts", "sampling", "signals", "budget", "judge", "logging", "data_parallel"}


def test_a_key_that_moves_nothing_is_found_to_move_nothing(monkeypatch) -> None:
    """Without the storage exclusion, `checkpoint_every` would enter the train key: the probe sees it."""
    monkeypatch.setattr(Budget, "STORAGE_FIELDS", frozenset({"keep_checkpoints"}))
    moved = cache_probe.probe_all([k for k in experiment_keys() if k.path == "budget.checkpoint_every"],
                                  builtin_plugins())
    assert moved["budget.checkpoint_every"].stages == ("train", "answers", "judgements")
