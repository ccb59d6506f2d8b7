"""The sample viewer's data (harness.report.samples): answers joined with judgements and per-item scores,
rows without artifacts, merged runs, the size budget, and JSON that cannot break out of its script tag."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers.sample_artifacts import write_sample_artifacts

from harness.benchmarks.arena_hard.formats import PROMPT_TEMPLATE
from harness.benchmarks.mt_bench import FALLBACK_PROMPTS
from harness.cli import main
from harness.report import build_leaderboard, write_reports
from harness.report.html import html_text
from harness.report.sample import sample_results
from harness.report.samples import build_samples, mt_bench_prompt, script_json, shorten, text_cap
from harness.results import RunResults
from harness.store import read_jsonl

BREAKOUT = '</script><script>alert("x")</script><!-- <script> & \u2028'


def _run(tmp_path: Path, methods: tuple[str, ...] = ("pad", "dpo"), seeds: tuple[int, ...] = (0, 1),
         **kwargs: object) -> tuple[RunResults, Path]:
    results = sample_results(methods=methods, seeds=seeds)
    write_sample_artifacts(results, tmp_path, **kwargs)  # type: ignore[arg-type]
    return results, tmp_path


def _bench(samples: dict, name: str) -> dict:
    return next(b for b in samples["benchmarks"] if b["name"] == name)


def _records(run_dir: Path, results: RunResults, row_index: int, bench: str, kind: str) -> list[dict]:
    return read_jsonl(run_dir / results.rows[row_index].artifacts[kind][bench] / f"{kind}.jsonl")


def test_answers_join_judgements_and_per_item_scores(tmp_path: Path) -> None:
    results, run_dir = _run(tmp_path)
    samples = build_samples(results, [run_dir])
    assert samples["missing"] == [] and samples["text_cap"] is None
    assert [r["label"] for r in samples["rows"]] == ["teacher", "student (untrained)", "pad (seed 0)",
                                                     "pad (seed 1)", "dpo (seed 0)", "dpo (seed 1)"]
    assert [b["name"] for b in samples["benchmarks"]] == ["alpaca_eval2", "arena_hard", "mt_bench", "gsm8k"]
    for bench in samples["benchmarks"]:
        for index, row in enumerate(results.rows):
            answers = _records(run_dir, results, index, bench["name"], "answers")
            cells = bench["cells"][str(index)]
            assert [str(i["id"]) for i in bench["items"]] == [str(a["id"]) for a in answers]
            per_item: dict[str, list[float]] = {}
            for entry in row.benchmarks[bench["name"]].per_item:
                per_item.setdefault(str(entry["id"]), []).append(entry["score"])
            for answer, cell in zip(answers, cells, strict=True):
                turns = answer["output"] if isinstance(answer["output"], list) else [answer["output"]]
                assert cell["turns"] == turns and cell["chars"] == [len(t) for t in turns]
                finished = answer["finished"] if isinstance(answer["finished"], list) else [answer["finished"]]
                assert cell["finished"] == finished
                # MT-Bench scores each turn: the item's score is their mean
                assert cell["score"] == pytest.approx(sum(per_item[str(answer["id"])]) / len(per_item[str(answer["id"])]))


def test_verdicts_reasoning_and_prompts_per_benchmark(tmp_path: Path) -> None:
    results, run_dir = _run(tmp_path)
    samples = build_samples(results, [run_dir])
    alpaca = _bench(samples, "alpaca_eval2")
    judged = _records(run_dir, results, 2, "alpaca_eval2", "judgements")[0]
    item, cell = alpaca["items"][0], alpaca["cells"]["2"][0]
    assert item["prompt"] == [judged["instruction"]] and item["reference"] == judged["output_1"]
    assert cell["judge"] == [{"label": "judge", "text": judged["raw_completion"],
                              "verdict": f"preference {judged['preference']:.3f} (1 = reference, 2 = this answer)"}]

    # Arena-Hard and MT-Bench keep the prompt only in the judge's prompt: recovered, it rebuilds that prompt.
    arena = _bench(samples, "arena_hard")
    game = _records(run_dir, results, 3, "arena_hard", "judgements")[0]["games"]
    item, cell = arena["items"][0], arena["cells"]["3"][0]
    assert PROMPT_TEMPLATE.format(QUESTION=item["prompt"][0], ANSWER_A=item["reference"],
                                  ANSWER_B=cell["turns"][0]) == game[0]["user_prompt"]
    assert item["reference_label"] == "baseline answer (gpt-4-0314)" and cell["tokens"] > 0
    assert [(v["label"], v["verdict"], v["text"]) for v in cell["judge"]] == [
        ("game 1 (reference A, this answer B)", game[0]["score"], game[0]["judgment"]),
        ("game 2 (this answer A, reference B)", game[1]["score"], game[1]["judgment"])]

    mt = _bench(samples, "mt_bench")
    records = _records(run_dir, results, 0, "mt_bench", "judgements")[:2]
    item, cell = mt["items"][0], mt["cells"]["0"][0]
    assert len(item["prompt"]) == 2 and item["category"] == "writing"
    second = FALLBACK_PROMPTS["single-v1-multi-turn"]["prompt_template"]
    assert second.format(question_1=item["prompt"][0], question_2=item["prompt"][1], answer_1=cell["turns"][0],
                         answer_2=cell["turns"][1]) == records[1]["user_prompt"]
    assert [v["label"] for v in cell["judge"]] == ["turn 1", "turn 2"]
    assert cell["judge"][0]["verdict"] == f"rating {records[0]['score']}/10"

    # Judge-free: the per-item metrics, not a verdict; no prompt recorded.
    gsm8k = _bench(samples, "gsm8k")
    assert gsm8k["items"][0]["prompt"] is None and "judge" not in gsm8k["cells"]["0"][0]
    assert set(gsm8k["cells"]["0"][0]["metrics"]) == {"target", "strict_match", "strict_match_extracted"}


def test_mt_bench_math_prompt_and_references_come_back_from_the_judge_prompt() -> None:
    """Math questions quote reference answers too; an answer holding the template's own markers still
    anchors the match (the answers are known)."""
    template = FALLBACK_PROMPTS["single-math-v1-multi-turn"]["prompt_template"]
    answers = ["Sure.\n\n### User:\nnot a question", "x = 2"]
    judged = {"turn": 2, "judge_prompt": "single-math-v1-multi-turn", "user_prompt": template.format(
        question_1="Solve x + 1 = 3.", question_2="And 2x = 4?", ref_answer_1="x = 2", ref_answer_2="x = 2",
        answer_1=answers[0], answer_2=answers[1])}
    assert mt_bench_prompt({"output": answers}, [judged]) == {
        "prompt": ["Solve x + 1 = 3.", "And 2x = 4?"], "reference": "Turn 1:\nx = 2\n\nTurn 2:\nx = 2",
        "reference_label": "reference answers (given to the judge)"}
    assert mt_bench_prompt({"output": answers}, [{**judged, "user_prompt": "another template"}]) is None


def test_rows_without_artifacts_are_listed_not_raised(tmp_path: Path) -> None:
    results, run_dir = _run(tmp_path)
    results.rows[1].artifacts = {}  # an older results file: no artifact paths
    shutil.rmtree(run_dir / results.rows[2].artifacts["answers"]["arena_hard"])  # a run dir cleaned up
    (run_dir / results.rows[3].artifacts["judgements"]["gsm8k"] / "judgements.jsonl").write_text("{not json\n")
    samples = build_samples(results, [run_dir])
    missing = {(m["label"], m["benchmark"]): m["reason"] for m in samples["missing"]}
    assert set(missing) == {("student (untrained)", None), ("pad (seed 0)", "arena_hard"), ("pad (seed 1)", "gsm8k")}
    assert "no artifact paths recorded" in missing[("student (untrained)", None)]
    assert "not found" in missing[("pad (seed 0)", "arena_hard")]
    assert ":1:" in missing[("pad (seed 1)", "gsm8k")] or "line 1" in missing[("pad (seed 1)", "gsm8k")]
    assert "1" not in _bench(samples, "alpaca_eval2")["cells"] and "2" not in _bench(samples, "arena_hard")["cells"]
    assert "2" in _bench(samples, "alpaca_eval2")["cells"]  # the rest of that row is still shown

    # Nothing readable at all: the report says so in plain HTML (no data, so no script) and links nothing.
    bare = sample_results(methods=("pad",), seeds=(0,))
    html = html_text(build_leaderboard(bare, n_boot=50), build_samples(bare, [tmp_path / "nowhere"]))
    assert "No samples in this report" in html and "<script" not in html and "#samples=" not in html
    assert "pad (seed 0): no artifact paths recorded" in html


def test_score_cells_link_to_their_rows_items(tmp_path: Path) -> None:
    results, run_dir = _run(tmp_path, methods=("pad",), seeds=(0,))
    results.rows[2].artifacts = {}  # pad has no samples: its cells stay plain text
    html = write_reports(results, run_dir, paper_dirs=[], n_boot=50)["html"].read_text()
    scores = html.split('id="scores"', 1)[1].split("</table>", 1)[0]
    links = re.findall(r'<a href="([^"]+)">', scores)
    assert "#samples=alpaca_eval2&amp;row=teacher" in links and "#samples=gsm8k&amp;row=teacher" in links
    assert "#samples=mt_bench&amp;row=student%20%28untrained%29" in links
    assert not any("row=pad" in link for link in links)
    pad_line = scores.split('data-row="pad"', 1)[1].split("</tr>", 1)[0]
    assert "<a " not in pad_line and "<td>" in pad_line


def test_embedded_json_cannot_break_out_of_its_script_tag(tmp_path: Path) -> None:
    results, run_dir = _run(tmp_path, methods=("pad",), seeds=(0,),
                            answers={("pad", "alpaca_eval2", "a0"): BREAKOUT,
                                     ("pad", "alpaca_eval2", "a1"): "lone \ud800 surrogate"})
    results.rows[2].row = BREAKOUT  # a row name is a run string too
    text = script_json({"answer": BREAKOUT})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"answer": BREAKOUT}

    html = write_reports(results, run_dir, paper_dirs=[], n_boot=50)["html"].read_text()
    assert html.lower().count("<script") == 2 and html.lower().count("</script") == 2  # the data and the viewer
    data = html.split('<script type="application/json" id="samples-data">', 1)[1].split("</script>", 1)[0]
    embedded = json.loads(data)["samples"]
    assert _bench(embedded, "alpaca_eval2")["cells"]["2"][0]["turns"] == [BREAKOUT]
    assert embedded["rows"][2]["row"] == BREAKOUT
    assert _bench(embedded, "alpaca_eval2")["cells"]["2"][1]["turns"] == ["lone \ufffd surrogate"]
    # self-contained: nothing fetched, whatever a run holds
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html and " src=" not in html


def test_text_budget_cuts_the_longest_texts_to_one_cap() -> None:
    assert text_cap([100, 200, 1000], 10_000) is None
    assert text_cap([100, 200, 1000, 1000], 1300) == 500  # 100 + 200 + 2 x 500
    assert text_cap([5000] * 10, 100) == 400  # never below MIN_TEXT_CAP
    long = "HEAD" + "x" * 5000 + "TAIL"
    short = shorten(long, 600)
    assert len(short) == 600 and short.startswith("HEAD") and short.endswith("TAIL")
    assert "characters cut from this report" in short and shorten("short", 600) == "short"


def test_budget_applies_to_every_embedded_text(tmp_path: Path) -> None:
    results, run_dir = _run(tmp_path, methods=("pad",), seeds=(0,), answer_chars=(900, 1200))
    samples = build_samples(results, [run_dir], max_text_chars=200_000)
    cap = samples["text_cap"]
    assert cap is not None and 400 <= cap < 900
    cells = [c for b in samples["benchmarks"] for cs in b["cells"].values() for c in cs if c]
    assert all(len(t) <= cap for c in cells for t in c["turns"])
    assert all(len(v["text"]) <= cap for c in cells for v in c.get("judge", []) if v["text"])
    assert any(c["chars"][0] >= 900 for c in cells)  # lengths are of the full answers


def test_merged_report_finds_each_runs_artifacts(tmp_path: Path) -> None:
    a, dir_a = _run(tmp_path / "a", methods=("pad",), seeds=(0,), seed=0)
    b, dir_b = _run(tmp_path / "b", methods=("dpo",), seeds=(0,), seed=1,
                    answers={("dpo", "alpaca_eval2", "a3"): "DPO-ANSWER-FROM-RUN-B"})
    a.save(dir_a / "results.json")
    b.save(dir_b / "results.json")
    assert main(["report", str(dir_a), str(dir_b), "--n-boot", "50", "--paper-dir", str(tmp_path)]) == 0
    merged = dir_a / "merged"
    assert "DPO-ANSWER-FROM-RUN-B" in (merged / "report.html").read_text()
    # the merged results re-reported on their own: the runs they came from are found through their provenance
    (merged / "report.html").unlink()
    assert main(["report", str(merged), "--n-boot", "50", "--paper-dir", str(tmp_path)]) == 0
    html = (merged / "report.html").read_text()
    assert "DPO-ANSWER-FROM-RUN-B" in html and "#samples=alpaca_eval2&amp;row=dpo" in html
