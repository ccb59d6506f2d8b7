"""The data of report.html's sample viewer: per benchmark and item, the prompt and every row's answer,
joined with the judge's verdicts and the per-item scores of results.json.

Rows name their artifacts (`RowResult.artifacts`: answers and judgements dirs, relative to the run dir);
this module reads `answers.jsonl` and `judgements.jsonl` there. Rows without artifacts (results written
before they were recorded) or whose artifacts are gone are listed as missing, with the reason, never an
error: a report is written whatever the viewer can show.

What a record holds depends on its benchmark; the reading here goes by the record's shape (an `output`
string or list of turns, `games`, `judgment`, `preference`), so a plugin benchmark with records like the
built-in ones shows up the same way and any other still shows its answers and per-item metrics.
Benchmarks that keep their prompt only inside the judge's prompt (Arena-Hard, MT-Bench) get it back by
matching the judge template, with the row's own answer as the anchor.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results import RowResult, RunResults
from harness.textfiles import read_jsonl

# The embedded texts (prompts, answers, judge reasoning) of one report, in characters. Past it, every text
# longer than a common cap is cut to its head and tail, the cap chosen as large as the budget allows. The
# rest of the JSON (ids, flags, scores, keys) adds ~7%: 40M characters of texts keep the embedded JSON under
# ~50 MB, which the browser reads and parses in about half a second (tests/perf/report_viewer.py).
MAX_TEXT_CHARS = 40_000_000
MIN_TEXT_CAP = 400  # below this a cut answer says too little to be worth showing at all
CUT_MARK = "\n[... {n:,} characters cut from this report; the full text is in the run's artifacts ...]\n"

# Fields of a judgement record that are texts, ids or the judge's bookkeeping, not per-item metrics.
_NOT_METRICS = frozenset({
    "id", "question_id", "output", "raw_output", "instruction", "output_1", "output_2", "generator_1",
    "generator_2", "user_prompt", "judgment", "raw_completion", "top_logprobs", "games", "metadata", "decoding",
    "lm_eval_aggregate", "judge_prompt", "annotator", "position", "dataset", "version", "baseline", "category",
    "turn", "finished",
})
_MAX_METRIC_TEXT = 200  # a longer string field is a text, not a metric
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # paired surrogates are already one code point in a str


class SampleError(HarnessError):
    """An artifact the viewer cannot read (its reason is shown in the report, never raised past it)."""


# --------------------------------------------------------------------------------------- locating
def candidate_dirs(results: RunResults, run_dirs: Sequence[Path]) -> list[Path]:
    """Where rows' relative artifact paths may start: the given run dirs, then the runs a merged results
    file was made from (its provenance names them), so re-reporting a merged leaderboard still finds them."""
    merged = [Path(str(m["run"])) for m in results.provenance.get("merged_from") or [] if m.get("run")]
    return list(dict.fromkeys([Path(d) for d in run_dirs] + merged))


def locate(relative: str, dirs: Sequence[Path]) -> Path:
    path = Path(relative)
    if path.is_absolute():
        return path
    for base in dirs:
        if (base / path).is_dir():
            return base / path
    where = ", ".join(str(d) for d in dirs) or "no run directory"
    raise SampleError(f"artifact {relative} not found under {where}")


def read_records(folder: Path, name: str) -> list[dict[str, Any]]:
    path = folder / name
    if not path.is_file():
        raise SampleError(f"{path} not found")
    try:
        return read_jsonl(path, "run artifact JSONL file", SampleError)
    except OSError as exc:
        raise SampleError(f"{path}: {exc}") from None


# ------------------------------------------------------------------------------------ one record
def item_key(record: dict[str, Any]) -> str:
    """Ids are strings or numbers (MT-Bench question ids): joined as text."""
    return str(record.get("id", record.get("question_id")))


def answer_turns(answer: dict[str, Any]) -> list[str]:
    """The answer's text per turn (one turn unless the benchmark is multi-turn)."""
    output = answer.get("output")
    if isinstance(output, list):
        return [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in output]
    return [] if output is None else [str(output)]


def finished_flags(answer: dict[str, Any]) -> list[bool] | None:
    """Per turn: ended on its own (True) or cut at max_new_tokens (False); None where not recorded."""
    flags = answer.get("finished")
    if flags is None:
        return None
    return [bool(f) for f in flags] if isinstance(flags, list) else [bool(flags)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _scalar(value: Any) -> Any:
    """A value fit for the metrics line: a finite number, a bool, a short string or a short list of them."""
    if isinstance(value, bool) or (isinstance(value, str) and len(value) <= _MAX_METRIC_TEXT):
        return value
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, list) and len(value) <= 20:
        items = [_scalar(v) for v in value]
        return items if all(i is not None for i in items) else None
    return None


def judge_verdicts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the judge said about one item: a verdict and its reasoning, per game or turn."""
    out: list[dict[str, Any]] = []
    for record in records:
        if isinstance(record.get("games"), list):  # Arena-Hard: the row's answer is B, then A (swapped)
            for n, game in enumerate(record["games"]):
                side = "reference A, this answer B" if n == 0 else "this answer A, reference B"
                verdict = game.get("score") or "no verdict label found"
                out.append({"label": f"game {n + 1} ({side})", "verdict": str(verdict),
                            "text": game.get("judgment")})
        elif "judgment" in record:  # MT-Bench: one rating per turn, -1 where none could be parsed
            score = record.get("score")
            verdict = "no rating found" if score in (None, -1) else f"rating {score}/10"
            label = f"turn {record['turn']}" if "turn" in record else "judge"
            out.append({"label": label, "verdict": verdict, "text": record.get("judgment")})
        elif "preference" in record:  # AlpacaEval: 1 = the reference preferred, 2 = this answer
            pref = _number(record.get("preference"))
            verdict = ("identical to the reference: a draw, not judged" if record.get("identical_to_reference")
                       else "no preference" if pref is None
                       else f"preference {pref:.3f} (1 = reference, 2 = this answer)")
            out.append({"label": "judge", "verdict": verdict, "text": record.get("raw_completion")})
    out.sort(key=lambda v: v["label"])  # turn 1 before turn 2 whatever order the records came in
    return out


def item_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-item metrics of a judge-free benchmark (exact match, extracted answer, checks followed, ...)."""
    metrics: dict[str, Any] = {}
    for record in records:
        for key, value in record.items():
            if key not in _NOT_METRICS and (shown := _scalar(value)) is not None:
                metrics[key] = shown
    return metrics


def mean_score(per_item: list[dict[str, Any]]) -> dict[str, float]:
    """Per-item score by item id; items scored per turn (MT-Bench) are averaged over their turns."""
    scores: dict[str, list[float]] = {}
    for entry in per_item:
        value = _number(entry.get("score"))
        if value is not None:
            scores.setdefault(item_key(entry), []).append(value)
    return {k: sum(v) / len(v) for k, v in scores.items()}


# ---------------------------------------------------------------------------------- the prompt
def invert_template(template: str, text: str, known: dict[str, str]) -> dict[str, str] | None:
    """The fields of `template` that `text` was formatted with (those in `known` given), or None where
    `text` is not the template's. Known fields are anchors: with the answers known, only the question is
    left to find between fixed markers."""
    pattern, seen = [], set()
    for literal, field, _, _ in string.Formatter().parse(template):
        pattern.append(re.escape(literal))
        if field is None:
            continue
        if field in known:
            pattern.append(re.escape(known[field]))
        elif field in seen:
            pattern.append(f"(?P={field})")
        else:
            seen.add(field)
            pattern.append(f"(?P<{field}>.*?)")
    try:
        match = re.fullmatch("".join(pattern), text, re.DOTALL)
    except re.error:  # a field name that is not a group name
        return None
    return match.groupdict() if match else None


def arena_hard_prompt(answer: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any] | None:
    from harness.benchmarks.arena_hard.formats import PROMPT_TEMPLATE

    games = next((r["games"] for r in records if isinstance(r.get("games"), list) and r["games"]), None)
    turns = answer_turns(answer)
    if not games or not turns or not isinstance(games[0].get("user_prompt"), str):
        return None
    fields = invert_template(PROMPT_TEMPLATE, games[0]["user_prompt"], {"ANSWER_B": turns[-1]})
    if fields is None:
        return None
    baseline = next((r.get("baseline") for r in records if r.get("baseline")), None)
    return {"prompt": [fields["QUESTION"]], "reference": fields["ANSWER_A"],
            "reference_label": f"baseline answer ({baseline})" if baseline else "baseline answer"}


def mt_bench_prompt(answer: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any] | None:
    from harness.benchmarks.mt_bench import FALLBACK_PROMPTS

    turns = answer_turns(answer)
    known = {"answer": turns[0] if turns else "", **{f"answer_{n + 1}": t for n, t in enumerate(turns)}}
    found: dict[str, str] = {}
    for record in sorted(records, key=lambda r: -(_number(r.get("turn")) or 0)):  # turn 2 has both questions
        template = FALLBACK_PROMPTS.get(str(record.get("judge_prompt")), {}).get("prompt_template")
        if template and isinstance(record.get("user_prompt"), str):
            found = invert_template(template, record["user_prompt"], known) or {}
            if found:
                break
    questions = [found[k] for k in ("question_1", "question_2") if k in found] or (
        [found["question"]] if "question" in found else [])
    # Math and reasoning questions are judged against reference answers, quoted in the judge's prompt.
    references = [f"Turn {n}:\n{found[f'ref_answer_{n}']}" for n in (1, 2) if f"ref_answer_{n}" in found]
    reference = {"reference": "\n\n".join(references), "reference_label": "reference answers (given to the judge)"}
    return {"prompt": questions, **(reference if references else {})} if questions else None


def item_prompt(answer: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """{"prompt": [turns], "reference": ..., "reference_label": ...} as far as the records tell."""
    if isinstance(answer.get("instruction"), str):  # AlpacaEval keeps the instruction; its judge the reference
        judged = next((r for r in records if isinstance(r.get("output_1"), str)), None)
        reference = {"reference": judged["output_1"],
                     "reference_label": f"reference answer ({judged.get('generator_1') or 'reference'})"} if judged else {}
        return {"prompt": [answer["instruction"]], **reference}
    if any(isinstance(r.get("games"), list) for r in records):
        return arena_hard_prompt(answer, records)
    if any("judge_prompt" in r for r in records):
        return mt_bench_prompt(answer, records)
    return None


# ------------------------------------------------------------------------------- one benchmark
def answer_cell(answer: dict[str, Any], records: list[dict[str, Any]], score: float | None) -> dict[str, Any]:
    """One row's answer to one item, with everything the viewer shows beside it."""
    turns = answer_turns(answer)
    cell: dict[str, Any] = {"turns": turns, "finished": finished_flags(answer), "chars": [len(t) for t in turns],
                            "score": score}
    if _number(answer.get("token_len")) is not None:
        cell["tokens"] = answer["token_len"]
    verdicts = judge_verdicts(records)
    if verdicts:
        cell["judge"] = verdicts
    elif records:
        cell["metrics"] = item_metrics(records)
    return cell


class BenchmarkSamples:
    """The items of one benchmark (in the order rows answered them) and each row's answer to each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: dict[str, dict[str, Any]] = {}
        self.cells: dict[int, dict[str, dict[str, Any]]] = {}  # row index -> item key -> cell

    def add(self, row_index: int, answers: list[dict[str, Any]], judgements: list[dict[str, Any]],
            per_item: list[dict[str, Any]]) -> None:
        by_item: dict[str, list[dict[str, Any]]] = {}
        for record in judgements:
            by_item.setdefault(item_key(record), []).append(record)
        scores = mean_score(per_item)
        own = self.cells.setdefault(row_index, {})
        for answer in answers:
            key, records = item_key(answer), by_item.get(item_key(answer), [])
            item = self.items.setdefault(key, {"id": answer.get("id", key), "prompt": None})
            if answer.get("category") and "category" not in item:
                item["category"] = str(answer["category"])
            if item["prompt"] is None and (prompt := item_prompt(answer, records)):
                item.update(prompt)
            own[key] = answer_cell(answer, records, scores.get(key))

    def to_json(self) -> dict[str, Any]:
        keys = list(self.items)
        return {"name": self.name, "items": [self.items[k] for k in keys],
                "cells": {str(row): [own.get(k) for k in keys] for row, own in self.cells.items()}}


# -------------------------------------------------------------------------------- the whole run
def _describe(row: RowResult) -> dict[str, Any]:
    label = row.row if row.seed is None else f"{row.row} (seed {row.seed})"
    return {"row": row.row, "seed": row.seed, "kind": row.kind, "label": label}


def _add_row(benches: dict[str, BenchmarkSamples], missing: list[dict[str, Any]], index: int, row: RowResult,
             dirs: Sequence[Path]) -> None:
    answers_dirs = row.artifacts.get("answers") or {}
    if not answers_dirs:
        missing.append({**_describe(row), "benchmark": None,
                        "reason": "no artifact paths recorded (results written before rows named their artifacts)"})
    judgement_dirs = row.artifacts.get("judgements") or {}
    for bench, relative in answers_dirs.items():
        try:
            answers = read_records(locate(relative, dirs), "answers.jsonl")
            judged = judgement_dirs.get(bench)
            judgements = read_records(locate(judged, dirs), "judgements.jsonl") if judged else []
        except SampleError as exc:
            missing.append({**_describe(row), "benchmark": bench, "reason": str(exc)})
            continue
        result = row.benchmarks.get(bench)
        benches.setdefault(bench, BenchmarkSamples(bench)).add(index, answers, judgements,
                                                               result.per_item if result else [])


def build_samples(results: RunResults, run_dirs: Sequence[Path],
                  max_text_chars: int = MAX_TEXT_CHARS) -> dict[str, Any]:
    """The viewer's data: {"rows": [{row, seed, kind, label}], "benchmarks": [{name, items, cells}],
    "missing": [{row, seed, benchmark, reason}], "text_cap": chars kept per text, or None if none was cut}.
    `cells[str(row index)][item index]`: that row's answer (None where it has none)."""
    dirs = candidate_dirs(results, run_dirs)
    benches: dict[str, BenchmarkSamples] = {}
    missing: list[dict[str, Any]] = []
    for index, row in enumerate(results.rows):
        _add_row(benches, missing, index, row, dirs)
    order = [b.get("name") for b in results.experiment.get("benchmarks") or [] if isinstance(b, dict)]
    ranked = sorted(benches.values(), key=lambda b: (order.index(b.name) if b.name in order else len(order), b.name))
    benchmarks = [b.to_json() for b in ranked]
    return {"rows": [_describe(r) for r in results.rows], "benchmarks": benchmarks, "missing": missing,
            "text_cap": cap_texts(benchmarks, max_text_chars)}


# ------------------------------------------------------------------------------- size and safety
def _text_slots(benchmarks: list[dict[str, Any]]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every embedded text, so they can be measured and cut in place."""
    for bench in benchmarks:
        for item in bench["items"]:
            for n in range(len(item.get("prompt") or [])):
                yield item["prompt"], n
            if isinstance(item.get("reference"), str):
                yield item, "reference"
        for cells in bench["cells"].values():
            for cell in cells:
                if cell is None:
                    continue
                for n in range(len(cell["turns"])):
                    yield cell["turns"], n
                for verdict in cell.get("judge") or []:
                    if isinstance(verdict.get("text"), str):
                        yield verdict, "text"


def text_cap(lengths: Sequence[int], budget: int) -> int | None:
    """The largest cap c with sum(min(length, c)) <= budget (None: everything fits uncut), not below
    MIN_TEXT_CAP."""
    if sum(lengths) <= budget:
        return None
    ordered = sorted(lengths)
    used = 0
    for n, length in enumerate(ordered):
        cap = (budget - used) // (len(ordered) - n)  # shared equally by this text and every longer one
        if cap < length:
            return max(cap, MIN_TEXT_CAP)
        used += length
    return None


def shorten(text: str, cap: int) -> str:
    """The text's head and tail (how it starts, and how it ended: finished or cut) with the cut marked,
    `cap` characters in all (the mark included, so the budget holds)."""
    if len(text) <= cap:
        return text
    kept = max(cap - len(CUT_MARK.format(n=len(text))), 0)
    head = kept * 2 // 3
    return text[:head] + CUT_MARK.format(n=len(text) - kept) + text[len(text) - (kept - head):]


def cap_texts(benchmarks: list[dict[str, Any]], budget: int) -> int | None:
    slots = list(_text_slots(benchmarks))
    cap = text_cap([len(container[key]) for container, key in slots], budget)
    if cap is not None:
        for container, key in slots:
            container[key] = shorten(container[key], cap)
    return cap


def script_json(data: Any) -> str:
    """JSON for a `<script type="application/json">` element: `<`, `>` and `&` escaped as \\u003c etc.
    (valid JSON, the same strings), so no text of a run can close the element or open a comment. A lone
    surrogate (JSON files may escape one; no UTF-8 file can hold it) becomes U+FFFD."""
    text = _LONE_SURROGATE.sub("\ufffd", json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text
