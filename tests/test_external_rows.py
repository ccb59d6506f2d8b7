"""External rows (`external:`): a model trained elsewhere and answers made elsewhere, as leaderboard rows.

The checks that can fail: an external model answers exactly as the same model does as the untrained student
(same backend, same template, no context); answers exported from one run and imported as an external row of
another are judged the same (from the judge cache: no new judge call) and score the same; bad answers files
are one line at `validate`; bad `external:` entries are one line at parse time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.experiments import small_experiment

from harness.config import parse_experiment
from harness.errors import ConfigError
from harness.pipeline import Pipeline, run_experiment
from harness.results import RunResults
from harness.store import read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


def _exp(name, **extra):
    """The shared small experiment, one optimizer step of sft."""
    return small_experiment(name, budget={"max_steps": 1, "micro_batch": 2}, **extra)


def _row(results: RunResults, name: str):
    return next(r for r in results.rows if r.row == name)


def test_an_external_model_answers_and_scores_as_the_same_model_does_as_a_row(tmp_path):
    data = _exp("ext-model", prompts=2, external=[{"label": "outside", "model": {"model": "tiny:llama",
                                                                                            "seed": 0}}])
    results = run_experiment(parse_experiment(data), tmp_path, progress=False)
    outside, student = _row(results, "outside"), _row(results, "student (untrained)")
    assert outside.kind == "external" and outside.external["model"] == "tiny:llama"
    answers = [[{k: v for k, v in a.items() if k != "generator"}  # the row's name
                for a in read_jsonl(tmp_path / row.artifacts["answers"]["alpaca_eval2"] / "answers.jsonl")]
               for row in (outside, student)]
    assert answers[0] == answers[1]  # the same weights, template and (empty) context: the same greedy answers
    assert outside.artifacts["answers"] != student.artifacts["answers"]  # but its own artifacts (own key)
    assert outside.benchmarks["alpaca_eval2"].metrics == student.benchmarks["alpaca_eval2"].metrics
    board = (tmp_path / "LEADERBOARD.md").read_text()
    line = next(line for line in board.splitlines() if line.startswith("| outside"))  # the scores table's row
    assert "| 1 | external (not trained here) |" in line


def test_external_entries_are_checked_when_the_file_is_parsed():
    def problem(external):
        with pytest.raises(ConfigError) as err:
            parse_experiment(_exp("bad", external=external), "x.yaml")
        return str(err.value)

    assert "either `model:`" in problem([{"label": "a", "model": "tiny:llama", "answers": {"alpaca_eval2": "f"}}])
    assert "either `model:`" in problem([{"label": "a"}])
    assert "already a row's name" in problem([{"label": "sft", "model": "tiny:llama"}])
    assert "does not evaluate" in problem([{"label": "a", "answers": {"mt_bench": "f.jsonl"}}])
    assert "context" in problem([{"label": "a", "model": {"model": "tiny:llama", "system_prompt": "Hi"}}])


def test_an_external_row_changes_no_key_of_the_rest_of_the_run(tmp_path):
    plain = Pipeline(parse_experiment(_exp("keys")), tmp_path)
    more = Pipeline(parse_experiment(_exp("keys", external=[{"label": "o", "model": "tiny:llama"}])),
                    tmp_path)
    keys = [{s.artifact.key for s in p.plan()} for p in (plain, more)]
    assert keys[0] < keys[1]  # the same stages, plus the external row's answers and judgements
    assert len(keys[1] - keys[0]) == 2
    assert json.dumps(plain.ctx.exp.model_dump(mode="json")["budget"]) == json.dumps(
        more.ctx.exp.model_dump(mode="json")["budget"])


def test_exported_answers_come_back_as_an_external_row_with_the_same_judgements_and_scores(tmp_path):
    from harness.interop.export import export_run

    benchmarks = [{"name": "alpaca_eval2", "subset": 2, "max_new_tokens": 4},
                  {"name": "arena_hard", "subset": 2, "max_new_tokens": 4,
                   "params": {"version": "v2.0", "judge_max_tokens": 8, "bootstrap_rounds": 20}},
                  {"name": "mt_bench", "subset": 2, "max_new_tokens": 4, "params": {"judge_max_tokens": 8}}]
    data = _exp("roundtrip", prompts=2, benchmarks=benchmarks)
    run_dir = tmp_path / "run"
    first = run_experiment(parse_experiment(data), run_dir, progress=False)
    exported = export_run(run_dir, tmp_path / "export", rows=["sft"])
    files = exported[0].files
    answers = {"alpaca_eval2": next(f for f in files["alpaca_eval2"] if f.endswith("model_outputs.json")),
               "arena_hard": next(f for f in files["arena_hard"] if "/model_answer/" in f),
               "mt_bench": next(f for f in files["mt_bench"] if "/model_answer/" in f)}
    external = [{"label": "sft again", "answers": {b: str(tmp_path / "export" / f) for b, f in answers.items()}}]
    second = run_experiment(parse_experiment({**data, "external": external}), run_dir, progress=False)
    again, sft = _row(second, "sft again"), _row(first, "sft")
    for bench in answers:
        ours = read_jsonl(run_dir / sft.artifacts["answers"][bench] / "answers.jsonl")
        theirs = read_jsonl(run_dir / again.artifacts["answers"][bench] / "answers.jsonl")
        assert [(a["id"], a["output"]) for a in theirs] == [(a["id"], a["output"]) for a in ours]
        assert again.benchmarks[bench].metrics == sft.benchmarks[bench].metrics, bench
        usage = again.benchmarks[bench].judge["usage"]
        assert usage.get("calls", 0) == 0 and usage.get("cache_hits", 0) > 0, (bench, usage)


def test_a_bad_answers_file_is_one_line_at_validate(tmp_path):
    from harness.preflight import preflight

    bad = tmp_path / "model_outputs.json"
    bad.write_text(json.dumps([{"instruction": "not an AlpacaEval instruction", "output": "x"}]))
    data = _exp("badfile", external=[{"label": "o", "answers": {"alpaca_eval2": str(bad)}}])
    with pytest.raises(ConfigError) as err:
        preflight(parse_experiment(data), "x.yaml")
    message = str(err.value)
    assert message.count("\n") == 0 and "external 'o' answers.alpaca_eval2" in message and str(bad) in message
    data = _exp("nofile", external=[{"label": "o", "answers": {"alpaca_eval2": str(tmp_path / "no")}}])
    with pytest.raises(ConfigError, match="not found"):
        preflight(parse_experiment(data), "x.yaml")


def test_answers_paths_are_relative_to_the_experiment_file(tmp_path):
    import yaml

    from harness.config import load_experiment

    (tmp_path / "sub").mkdir()
    data = _exp("rel", external=[{"label": "o", "answers": {"alpaca_eval2": "sub/outputs.json"}}])
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    exp = load_experiment(tmp_path / "exp.yaml")
    assert Path(exp.external[0].answers["alpaca_eval2"]) == tmp_path / "sub" / "outputs.json"
