"""Synthetic answers and judgements artifacts for `harness.report.sample.sample_results` rows, in the records'
real formats (AlpacaEval's preference, Arena-Hard's two games, MT-Bench's rating per turn, GSM8K's exact
match), so the report's sample viewer can be tested (and timed) without a run.

Scores follow each row's per-item scores in results.json, so the viewer's "lost to" filter has a known answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.benchmarks.arena_hard.formats import PROMPT_TEMPLATE
from harness.benchmarks.mt_bench import FALLBACK_PROMPTS
from harness.results import RunResults
from harness.store import write_jsonl

WORDS = ("the a model answer because therefore step first second result value list code function data "
         "however which means example consider note that this is we can then finally python return "
         "number sum total each item user question explain why how when where it its").split()
PREFIX = {"alpaca_eval2": "a", "arena_hard": "h", "mt_bench": "m", "gsm8k": "g"}


class Texts:
    """Random-word texts: slices of one corpus, so a paper-sized run (100 MB of text) is quick to make."""

    def __init__(self, rng: np.random.Generator, corpus_chars: int = 2_000_000) -> None:
        words = rng.choice(WORDS, size=corpus_chars // 5)
        self.corpus, self.rng = " ".join(words), rng

    def __call__(self, low: int, high: int) -> str:
        n = int(self.rng.integers(low, high + 1))
        start = int(self.rng.integers(0, len(self.corpus) - n))
        return self.corpus[start : start + n].strip()


def resize_per_item(results: RunResults, items: Mapping[str, int], seed: int = 0) -> None:
    """Give every row `items[b]` per-item scores on benchmark b (MT-Bench: questions, two turns each)."""
    rng = np.random.default_rng(seed)
    for row in results.rows:
        for name, n in items.items():
            bench = row.benchmarks.get(name)
            if bench is None:
                continue
            prefix = PREFIX.get(name, name)
            if name == "mt_bench":
                bench.per_item = [{"id": f"{prefix}{i}", "turn": t, "score": float(rng.integers(1, 11))}
                                  for i in range(n) for t in (1, 2)]
            else:
                bench.per_item = [{"id": f"{prefix}{i}", "score": float(rng.random() < 0.5)} for i in range(n)]


def _scores(per_item: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for entry in per_item:
        by_id.setdefault(str(entry["id"]), []).append(entry)
    return by_id


def _alpaca(item: str, entries: list[dict[str, Any]], prompt: dict[str, Any], out: str, done: bool,
            row: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    score = entries[0]["score"]
    answer = {"id": item, "instruction": prompt["question"], "output": out, "finished": done, "generator": row}
    judged = {"id": item, "instruction": prompt["question"], "output_1": prompt["reference"],
              "generator_1": "gpt4_1106_preview", "output_2": out, "generator_2": row,
              "preference": 1.0 + score, "raw_completion": "M" if score > 0.5 else "m",
              "identical_to_reference": False}
    return answer, [judged]


def _arena(item: str, entries: list[dict[str, Any]], prompt: dict[str, Any], out: str, done: bool,
           judge_text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    won = entries[0]["score"] > 0.5
    games = [{"score": "B>A" if won else "A>B", "judgment": f"{judge_text}\n\nMy final verdict is [[{'B>A' if won else 'A>B'}]]",
              "user_prompt": PROMPT_TEMPLATE.format(QUESTION=prompt["question"], ANSWER_A=prompt["reference"],
                                                    ANSWER_B=out)},
             {"score": "A>B" if won else "B>A", "judgment": judge_text,
              "user_prompt": PROMPT_TEMPLATE.format(QUESTION=prompt["question"], ANSWER_A=out,
                                                    ANSWER_B=prompt["reference"])}]
    answer = {"id": item, "category": "hard_prompt", "output": out, "finished": done, "token_len": len(out) // 4}
    return answer, [{"id": item, "category": "hard_prompt", "baseline": "gpt-4-0314", "games": games}]


def _mt_bench(item: str, entries: list[dict[str, Any]], prompt: dict[str, Any], outs: list[str],
              done: list[bool], judge_text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    first = FALLBACK_PROMPTS["single-v1"]["prompt_template"].format(question=prompt["question"], answer=outs[0])
    second = FALLBACK_PROMPTS["single-v1-multi-turn"]["prompt_template"].format(
        question_1=prompt["question"], answer_1=outs[0], question_2=prompt["question_2"], answer_2=outs[1])
    records = []
    for entry in entries:
        turn, score = int(entry["turn"]), int(entry["score"])
        records.append({"id": item, "question_id": item, "category": "writing", "turn": turn,
                        "judge_prompt": "single-v1" if turn == 1 else "single-v1-multi-turn",
                        "user_prompt": first if turn == 1 else second,
                        "judgment": f"{judge_text} Rating: [[{score}]]", "score": score})
    return {"id": item, "category": "writing", "output": outs, "finished": done}, records


def _gsm8k(item: str, entries: list[dict[str, Any]], out: str, done: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    correct = entries[0]["score"]
    return ({"id": item, "output": out, "finished": done},
            [{"id": item, "output": out, "target": "42", "strict_match_extracted": "42" if correct else "7",
              "strict_match": correct}])


def write_sample_artifacts(results: RunResults, run_dir: Path, *, answer_chars: tuple[int, int] = (60, 240),
                           judge_chars: tuple[int, int] = (40, 160), cut_rate: float = 0.1, seed: int = 0,
                           answers: Mapping[tuple[str, str, str], str] | None = None) -> RunResults:
    """Write answers.jsonl and judgements.jsonl for every row and benchmark of `results` under `run_dir` and
    record their paths in the rows' `artifacts` (as the pipeline does). `answers[(row, benchmark, id)]`: a
    fixed answer text for that item (every seed of the row), e.g. to test escaping."""
    rng = np.random.default_rng(seed)
    text = Texts(rng)
    prompts: dict[tuple[str, str], dict[str, Any]] = {}
    for row in results.rows:
        row.artifacts = {"answers": {}, "judgements": {}}
        for bench, result in row.benchmarks.items():
            answer_records, judgement_records = [], []
            for item, entries in _scores(result.per_item).items():
                if (bench, item) not in prompts:  # the same prompt for every row
                    prompts[(bench, item)] = {"question": f"[{item}] " + text(40, 400), "question_2": text(20, 200),
                                              "reference": text(*answer_chars)}
                prompt = prompts[(bench, item)]
                fixed = (answers or {}).get((row.row, bench, item))
                outs = [fixed or text(*answer_chars) for _ in range(2 if bench == "mt_bench" else 1)]
                done = [bool(rng.random() >= cut_rate) for _ in outs]
                if bench == "alpaca_eval2":
                    answer, judged = _alpaca(item, entries, prompt, outs[0], done[0], row.row)
                elif bench == "arena_hard":
                    answer, judged = _arena(item, entries, prompt, outs[0], done[0], text(*judge_chars))
                elif bench == "mt_bench":
                    answer, judged = _mt_bench(item, entries, prompt, outs, done, text(*judge_chars))
                else:
                    answer, judged = _gsm8k(item, entries, outs[0], done[0])
                answer_records.append(answer)
                judgement_records += judged
            # As the store names them: label and a key unique to the content, so two runs never share a path.
            label = re.sub(r"\W+", "_", f"{row.row}-s{row.seed}-{bench}")
            key = f"{int(rng.integers(0, 2**63)):016x}"
            for kind, records in (("answers", answer_records), ("judgements", judgement_records)):
                relative = f"artifacts/{kind}/{label}-{key}"
                (run_dir / relative).mkdir(parents=True, exist_ok=True)
                write_jsonl(run_dir / relative / f"{kind}.jsonl", records)
                row.artifacts[kind][bench] = relative
    return results
