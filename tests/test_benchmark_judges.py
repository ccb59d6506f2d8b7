"""A judge per benchmark, the official one by default, over real HTTP on loopback; a row judged by any
other judge is marked in every report format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from judge_server import FakeOpenAIServer

from harness.config import JudgeSpec, parse_experiment
from harness.errors import ConfigError
from harness.pipeline import Pipeline

KEY_ENV = "PAD_HARNESS_TEST_JUDGE_KEY"


def experiment(server: FakeOpenAIServer, mt_bench_judge: dict[str, Any] | None = None) -> Any:
    mt_bench: dict[str, Any] = {"name": "mt_bench", "subset": 1, "max_new_tokens": 4,
                                "params": {"judge_max_tokens": 8}}
    if mt_bench_judge is not None:
        mt_bench["judge"] = mt_bench_judge
    return parse_experiment({
        "name": "judges", "teacher": {"model": "tiny:llama", "seed": 1, "system_prompt": "Be brief."},
        "student": {"model": "tiny:llama", "seed": 0},
        "prompts": {"source": "sharegpt", "count": 2, "max_prompt_chars": 100},
        "sampling": {"candidates": 2, "n": 2, "max_new_tokens": 4},
        "methods": [{"name": "sft", "params": {"preference": "teacher_logprob"}}],
        "budget": {"max_steps": 1, "epochs": None, "effective_batch": 2, "micro_batch": 2, "max_length": 64,
                   "max_prompt_length": 48},
        "benchmarks": [
            {"name": "alpaca_eval2", "subset": 1, "max_new_tokens": 4},
            {"name": "arena_hard", "subset": 1, "max_new_tokens": 4,
             "params": {"version": "v2.0", "judge_max_tokens": 8, "bootstrap_rounds": 10}},
            mt_bench,
        ],
        "judge": {"backend": "openai", "model": "official", "base_url": server.base_url, "api_key_env": KEY_ENV,
                  "timeout_s": 5, "max_retries": 1, "concurrency": 2},
    }, "test")


@pytest.mark.slow  # end to end: the whole pipeline with judges over HTTP
def test_each_benchmark_is_judged_by_its_official_model_over_http(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAIServer() as server:
        pipe = Pipeline(experiment(server), tmp_path / "official", progress=False)
        pipe.run()
        models = {b["model"] for b in server.bodies}
        prompts = {b["model"]: json.dumps(b["messages"]) for b in server.bodies}
    assert models == {"gpt-4-1106-preview", "gpt-4.1", "gpt-4"}
    assert "[[rating]]" in prompts["gpt-4"]  # MT-Bench's single-v1 prompt went to gpt-4 ...
    assert "[[A>>B]]" in prompts["gpt-4.1"]  # ... Arena-Hard v2.0's to gpt-4.1
    md = (tmp_path / "official" / "LEADERBOARD.md").read_text()
    assert "†" not in md and "non-official" not in md
    assert "| judges |" not in md  # (sanity: the experiment name is not a row)


@pytest.mark.slow  # end to end: the whole pipeline with judges over HTTP
def test_a_benchmark_with_its_own_non_official_judge_is_marked_everywhere(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with FakeOpenAIServer() as server:
        exp = experiment(server, mt_bench_judge={"backend": "local", "model": "tiny:llama"})
        pipe = Pipeline(exp, tmp_path / "mixed", progress=False)
        plan = pipe.describe_plan()
        pipe.run()
        models = {b["model"] for b in server.bodies}
    assert models == {"gpt-4-1106-preview", "gpt-4.1"}  # MT-Bench went to its own local judge
    assert "judge tiny:llama (local, NOT the official gpt-4)" in plan
    run = tmp_path / "mixed"
    md = (run / "LEADERBOARD.md").read_text()
    assert "| sft † |" in md and "mt_bench by tiny:llama (official: gpt-4)" in md
    html = (run / "report.html").read_text()
    assert 'id="judge-footnote"' in html and "sft †" in html
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO((run / "leaderboard.csv").read_text()))}
    assert rows["sft"]["mt_bench.judge_is_official"] == "false"
    assert rows["sft"]["alpaca_eval2.judge_is_official"] == "true"
    flags = json.loads((run / "leaderboard.json").read_text())["answer_flags"]
    mt = next(f for f in flags if f["row"] == "sft" and f["benchmark"] == "mt_bench")
    assert mt["judge_is_official"] is False and mt["official_judge"] == "gpt-4" and mt["judge"] == "tiny:llama"
    # Every answer says whether it finished; with 4 tokens every one of them was cut.
    alpaca = next(f for f in flags if f["row"] == "sft" and f["benchmark"] == "alpaca_eval2")
    assert alpaca["answers"] == 1 and alpaca["truncated"] == 1
    assert "| sft | alpaca_eval2 | 1 of 1 |" in md and "1 of 1" in html


def test_official_needs_a_benchmark_that_has_one(tmp_path: Path) -> None:
    from harness.benchmarks.lm_eval_tasks import GSM8K
    from harness.config import BenchmarkSpec
    from harness.judges.choice import judge_spec_for

    spec = JudgeSpec(backend="openai", model="official")
    with pytest.raises(ConfigError, match="no official judge"):
        judge_spec_for(spec, BenchmarkSpec(name="gsm8k"), GSM8K())


def test_served_judge_starts_nothing_until_needed_and_is_keyed_by_its_model(monkeypatch: Any) -> None:
    import importlib.util

    from harness.judges.vllm_server import VLLMServerJudge

    spec = JudgeSpec(backend="vllm_server", model="tiny:llama", server_args=("--max-model-len", "512"))
    judge = VLLMServerJudge(spec)
    assert judge.complete([]) == [] and judge._server is None  # a fully cached run starts no server
    ident = judge.identity
    assert ident["backend"] == "vllm_server" and ident["model"]["model"] == "tiny:llama"
    assert ident["server_args"] == ["--max-model-len", "512"] and "port" not in json.dumps(ident)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else object())
    assert "needs vLLM installed" in (VLLMServerJudge.preflight(spec) or "")


def test_official_file_scoring_is_declared_on_the_base(tmp_path: Path, capsys: Any) -> None:
    from harness.benchmarks.alpaca_eval2 import AlpacaEval2
    from harness.benchmarks.arena_hard.benchmark import ArenaHard
    from harness.benchmarks.base import Benchmark
    from harness.benchmarks.gsm8k import GSM8K
    from harness.benchmarks.mt_bench import MTBench
    from harness.cli import main
    from harness.errors import HarnessError

    assert AlpacaEval2.scores_official_files() and ArenaHard.scores_official_files()
    assert MTBench.scores_official_files()
    assert not GSM8K.scores_official_files() and not Benchmark.scores_official_files()
    with pytest.raises(HarnessError, match="benchmark 'gsm8k' cannot score external judgement files"):
        GSM8K.score_official(tmp_path / "judgements.json")
    # The command says so before looking for the file; for a benchmark that can, a missing file is named.
    assert main(["score", "gsm8k", "--judgments", str(tmp_path / "missing.json")]) == 2
    assert "cannot score external judgement files" in capsys.readouterr().err
    assert main(["score", "mt_bench", "--judgments", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl' not found" in capsys.readouterr().err
