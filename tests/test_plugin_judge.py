"""The judge plugin of docs/plugins.md ("Add a judge"), end to end, the way a user runs it.

Its two files are taken verbatim from the guide, pip-installed into a temporary --target directory (its entry
point is then what the registry finds, as in test_plugin.py) and named in an experiment with the guide's own
`judge:` snippet. The pipeline answers AlpacaEval 2 (2 items) with every row (tiny models) and the guide's
rule-based judge grades them: each verdict is checked against the rule as this test reads it (the shorter
answer, in words, gets the probability `confidence`), on AlpacaEval 2's own prompts and log-prob parsing.
Then: a rerun whose judgements were deleted gets every verdict from the judge cache (the judge is asked
nothing), another `confidence` (a result param) re-judges without re-answering, and bad settings are one line
at `pad-harness validate`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.experiments import small_experiment
from helpers.tiny_models import draw_wider
from test_plugin import guide_block, install_plugin

from harness.benchmarks.alpaca_eval2 import is_switched, judge_request, preference_from_response
from harness.cli import main
from harness.config import JudgeSpec, parse_experiment
from harness.errors import JudgeError
from harness.judges.base import JudgeRequest
from harness.registry import JUDGES
from harness.store import read_jsonl


@pytest.fixture(scope="module")
def judge_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = install_plugin({"brevity_judge.py": guide_block("# my-judge/brevity_judge.py"),
                           "pyproject.toml": guide_block("# my-judge/pyproject.toml")}, tmp_path_factory)
    assert list(site.glob("pad_harness_brevity_judge-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def judge_on_path(judge_site: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(judge_site))
    # The registry caches its entry-point scan; rescan with the plugin visible, restore afterwards.
    monkeypatch.setattr(JUDGES, "_entry_points", None)
    monkeypatch.setattr(JUDGES, "_loaded", dict(JUDGES._loaded))
    yield judge_site
    sys.modules.pop("brevity_judge", None)


def guide_judge() -> dict[str, Any]:
    """The guide's `judge:` entry."""
    return yaml.safe_load(guide_block("# experiment.yaml (excerpt): judge"))["judge"]


def rule_preference(model_output: str, reference: str, confidence: float) -> float:
    """AlpacaEval 2's preference for the model's output (2: it wins) under the guide's rule, read independently:
    the answer with fewer words gets `confidence`, equal lengths are a draw."""
    model, ref = len(model_output.split()), len(reference.split())
    return 1.5 if model == ref else 1 + confidence if model < ref else 2 - confidence


def test_cli_lists_the_guide_judge(judge_on_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["judges"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"local", "openai", "vllm_server", "brevity"} <= set(lines)
    assert "A demonstration judge, a rule and no model" in lines["brevity"]
    plugin = sys.modules[JUDGES.get("brevity").__module__]
    assert Path(plugin.__file__).is_relative_to(judge_on_path)  # the installed guide code


def test_guide_judge_follows_its_rule_and_is_cached(judge_on_path: Path, tmp_path: Path) -> None:
    from harness.benchmarks.base import verdict_prefill
    from harness.judges.factory import build_judge

    # Instructions shown in both orders (AlpacaEval switches the outputs per instruction), each answer shorter,
    # longer and as long as the reference.
    switched = next(f"q{i}" for i in range(50) if is_switched(f"q{i}"))
    plain = next(f"q{i}" for i in range(50) if not is_switched(f"q{i}"))
    cases = [(q, reference, output) for q in (switched, plain)
             for reference, output in (("one two three", "short"), ("brief", "a much longer answer"),
                                       ("two words", "too, words"))]
    requests = [judge_request(*case) for case in cases]
    judge = build_judge(JudgeSpec(**guide_judge()), tmp_path / "cache.sqlite", params=guide_judge()["params"])
    replies = judge.complete(requests)
    assert [preference_from_response(r, is_switched(q)) for r, (q, _, _) in zip(replies, cases, strict=True)] \
        == pytest.approx([rule_preference(out, ref, 0.8) for _, ref, out in cases])
    assert all(r.text in ("m", "M") and not r.cached for r in replies)
    assert judge.calls == len(cases) and judge.inner.usage.attempts >= 1 and judge.inner.usage.calls == len(cases)

    # Asked again: every verdict from the cache, the judge itself asked nothing.
    again = judge.complete(requests)
    assert all(r.cached for r in again) and [r.top_logprobs for r in again] == [r.top_logprobs for r in replies]
    assert judge.calls == len(cases) and judge.cache_hits == len(cases) and judge.inner.usage.calls == len(cases)
    judge.close()
    # Another confidence is another identity: the same cache file answers nothing for it.
    other = build_judge(JudgeSpec(**guide_judge()), tmp_path / "cache.sqlite", params={"confidence": 0.9})
    assert [r.cached for r in other.complete(requests)] == [False] * len(cases) and other.cache_hits == 0
    # Its declared capabilities: no prefill (refused in one line); a prompt it cannot read is a JudgeError.
    with pytest.raises(JudgeError, match="continue a reply"):
        verdict_prefill(other, "some_benchmark", "[[")
    with pytest.raises(JudgeError, match="found 0 answer"):
        other.complete([JudgeRequest.chat([{"role": "user", "content": "Rate this answer from 1 to 10: hi"}])])
    other.close()


def judgement_steps(exp: Any, run_dir: Path) -> list[Any]:
    from harness.pipeline import Pipeline

    return [s for s in Pipeline(exp, run_dir, progress=False).plan() if s.kind == "judgements"]


def check_verdicts(steps: list[Any], confidence: float) -> list[dict[str, Any]]:
    """Every row's judgements follow the rule; the manifests name the guide judge. The judge usage of each."""
    usage = []
    for step in steps:
        records = read_jsonl(step.artifact.path / "judgements.jsonl")
        assert len(records) == 2 and not any(r["identical_to_reference"] for r in records)
        for r in records:  # output_1: the reference, output_2: the row's answer (un-switched order)
            assert r["preference"] == pytest.approx(rule_preference(r["output_2"], r["output_1"], confidence))
            assert r["raw_completion"] in ("m", "M")
        manifest = step.artifact.manifest()
        assert manifest["judge"]["backend"] == "brevity" and manifest["judge"]["confidence"] == confidence
        assert manifest["judge_is_official"] is False
        usage.append(manifest["judge_usage"])
    return usage


# Three runs of the pipeline on tiny models (the first samples and trains one step; then only judging): ~6 s.
def test_guide_judge_grades_alpaca_eval2_in_a_run(judge_on_path: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.pipeline import run_experiment

    draw_wider(monkeypatch)  # tiny models answering varied bytes rather than "\n" over and over
    data = small_experiment("brevity-judge", prompts=2, budget={"max_steps": 1, "micro_batch": 2})
    data["judge"] = guide_judge()  # backend brevity, model brevity, params {confidence: 0.8, unit: words}
    exp = parse_experiment(data, "test")
    run_dir = tmp_path / "run"
    results = run_experiment(exp, run_dir=run_dir, progress=False)
    steps = judgement_steps(exp, run_dir)
    rows = [r for r in results.rows if "alpaca_eval2" in r.benchmarks]
    assert len(steps) == len(rows) >= 3 and all(s.done for s in steps)
    usage = check_verdicts(steps, 0.8)
    # Each distinct question and answer asked once: a row answering like an earlier one (a trained row one step
    # from the student may) gets its verdicts from the cache.
    distinct = {(r["instruction"], r["output_2"]) for s in steps for r in read_jsonl(s.artifact.path / "judgements.jsonl")}
    assert [u["calls"] + u["cache_hits"] for u in usage] == [2] * len(steps)
    assert sum(u["calls"] for u in usage) == len(distinct) >= 4
    # The leaderboard's win rates are those verdicts: 100 x mean(preference - 1) per row.
    win_rates = sorted(100 * sum(r["preference"] - 1 for r in read_jsonl(s.artifact.path / "judgements.jsonl")) / 2
                       for s in steps)
    assert sorted(r.benchmarks["alpaca_eval2"].metrics["win_rate"] for r in rows) == pytest.approx(win_rates)
    assert all(r.benchmarks["alpaca_eval2"].judge_is_official is False for r in rows)

    # Judgements deleted, the run again: re-judged entirely from the judge cache (the judge asked nothing).
    for step in steps:
        shutil.rmtree(step.artifact.path)
    run_experiment(exp, run_dir=run_dir, progress=False)
    usage = check_verdicts(judgement_steps(exp, run_dir), 0.8)
    assert [(u["calls"], u["cache_hits"]) for u in usage] == [(0, 2)] * len(steps)

    # Another confidence (a result param): the judgements' key changes and the judge is asked again; the answers
    # are reused.
    data["judge"]["params"] = {**data["judge"]["params"], "confidence": 0.95}
    changed = parse_experiment(data, "test")
    from harness.pipeline import Pipeline

    plan = Pipeline(changed, run_dir, progress=False).plan()
    assert all(s.done for s in plan if s.kind in ("samples", "train", "answers"))
    assert not any(s.done for s in plan if s.kind == "judgements")
    run_experiment(changed, run_dir=run_dir, progress=False)
    usage = check_verdicts(judgement_steps(changed, run_dir), 0.95)
    assert sum(u["calls"] for u in usage) == len(distinct) and sum(u["cache_hits"] for u in usage) == 2 * len(steps) - len(distinct)


@pytest.mark.parametrize(("judge", "phrase"), [
    ({"params": {"confidence": 1.5}}, "judge.params: confidence: Input should be less than 1 (got 1.5)"),
    ({"params": {"pattern": "("}}, "pattern is not a regular expression"),
    ({"params": {"pattern": "(?P<answer>.*)"}}, "named groups (?P<label>...)"),
    ({"params": {"colour": "red"}}, "judge.params: unknown key 'colour'; allowed keys: confidence, pattern, unit"),
    ({"model": "gpt-4-1106-preview"}, "the brevity judge is a rule, not the model 'gpt-4-1106-preview'"),
], ids=["confidence", "not-a-regex", "no-groups", "unknown-key", "preflight-model"])
def test_bad_judge_settings_are_one_line_at_validate(judge_on_path: Path, judge: dict[str, Any], phrase: str,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_experiment("brevity-bad", budget={"max_steps": 1, "micro_batch": 2})
    data["judge"] = {**guide_judge(), **judge}
    data["output_dir"] = str(tmp_path / "run")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False))
    assert main(["validate", str(path)]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pad-harness: error: ") and phrase in err, err
    assert not (tmp_path / "run").exists()
