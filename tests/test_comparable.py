"""One definition of what must match between runs that share a leaderboard (harness.stages.comparable):
the hash recorded in results.json, the differences a refused merge names, and the judgements' cache key
agree on what counts."""

from __future__ import annotations

from typing import Any

import pytest

from harness.config import parse_experiment
from harness.report.merge import MergeError, check_compatible
from harness.results import RunResults
from harness.stages.comparable import comparable_experiment, experiment_hash

BASE: dict[str, Any] = {
    "name": "cmp", "teacher": {"model": "tiny:llama", "seed": 1}, "student": {"model": "tiny:llama"},
    "methods": [{"name": "sft"}],
    "benchmarks": [{"name": "alpaca_eval2", "subset": 2}, {"name": "ifeval", "subset": 2}],
    "judge": {"backend": "openai", "model": "official", "base_url": "http://127.0.0.1:1/v1"},
}


def _results(data: dict[str, Any]) -> RunResults:
    exp = parse_experiment(data, "test")
    return RunResults(experiment_name=exp.name, setting="", experiment=exp.model_dump(mode="json"),
                      experiment_hash=experiment_hash(exp), comparable=comparable_experiment(exp))


def _with(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


@pytest.mark.parametrize("change", [
    {"judge": {**BASE["judge"], "concurrency": 2, "max_retries": 1, "timeout_s": 5, "api_key_env": "OTHER_KEY"}},
    {"budget": {"checkpoint_every": 7, "keep_checkpoints": True}},  # where checkpoints go, not what is trained
    {"backends": {"vllm": {"gpu_memory_utilization": 0.5}}},  # a backend this run does not use
    {"methods": [{"name": "dpo"}], "seeds": [3], "name": "other", "logging": {"every": 5}},
    # runs whose methods differ only in their own optimizer settings
    {"methods": [{"name": "dpo", "optimizer": {"learning_rate": 5e-7, "schedule": "linear", "warmup_ratio": 0.0}}]},
    {"teacher": {**BASE["teacher"], "device_map": "auto", "offload": True}},  # where the weights sit
    # the optimizer defaults each method may override (every row records the settings it trained with)
    {"budget": {"learning_rate": 1e-3, "schedule": "linear"},
     "tuning": {"trials": 2, "select_on": {"benchmark": "teacher_agreement"}}},
])
def test_runs_that_differ_only_in_what_changes_no_number_merge(change: dict[str, Any]) -> None:
    a, b = _results(BASE), _results(_with(**change))
    assert a.experiment_hash == b.experiment_hash
    check_compatible(a, b)  # no error


def test_the_judge_is_compared_per_benchmark_with_official_resolved() -> None:
    """`model: official` and the official model named explicitly are the same judge for AlpacaEval 2;
    a judge-free benchmark's judge does not matter; another model for AlpacaEval 2 does."""
    explicit = _with(benchmarks=[{"name": "alpaca_eval2", "subset": 2,
                                  "judge": {**BASE["judge"], "model": "gpt-4-1106-preview"}},
                                 {"name": "ifeval", "subset": 2, "judge": {"backend": "local", "model": "tiny:x"}}])
    assert experiment_hash(parse_experiment(explicit, "t")) == experiment_hash(parse_experiment(BASE, "t"))
    other = _with(benchmarks=[{"name": "alpaca_eval2", "subset": 2, "judge": {**BASE["judge"], "model": "gpt-4o"}},
                              {"name": "ifeval", "subset": 2}])
    with pytest.raises(MergeError, match=r'benchmarks\.0\.judge\.model: "gpt-4-1106-preview" vs "gpt-4o"'):
        check_compatible(_results(BASE), _results(other))


@pytest.mark.parametrize("change, where", [
    ({"budget": {"max_length": 200}}, "budget.max_length"),
    ({"student": {"model": "tiny:llama", "seed": 5}}, "student.seed"),
    ({"generation_backend": "vllm"}, "generation_backend"),
])
def test_what_changes_a_number_is_refused_by_name(change: dict[str, Any], where: str) -> None:
    a, b = _results(BASE), _results(_with(**change))
    assert a.experiment_hash != b.experiment_hash
    with pytest.raises(MergeError, match=where.replace(".", r"\.")):
        check_compatible(a, b)
