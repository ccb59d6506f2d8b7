"""arena-hard-auto's answer and judgement files: one row's records written as its scripts write them
(`pad-harness export`), and an answers file read back into the records `ArenaHard.generate` writes (an
external row).

Each version is written as its own pipeline writes it (lmarena/arena-hard-auto):

* v2.0, commit 196f6b8: `model_answer/<model>.jsonl` from gen_answer.py `get_answer` (lines 53-75: uid,
  ans_id, model, messages with the answer under `content.answer`, tstamp, metadata), sorted by uid as
  utils/completion.py `reorg_answer_file` (line 654) leaves it; `model_judgment/<judge>/<model>.jsonl` from
  gen_judgment.py `judgment` (lines 84-116: uid, category, judge, model, baseline, games) whose games are
  `pairwise_judgment`'s results (lines 72-76: score, judgment = the completion dict {"answer": ...},
  prompt = the [system, user] messages).
* v0.1, commit 3071ef9 (the tree before 9a1d386 moved the scripts to v2.0): `model_answer/<model>.jsonl`
  from gen_answer.py `get_answer` (lines 90-111: question_id, answer_id, model_id, choices [{index, turns
  [{content}]}], tstamp, conv_metadata), sorted by question_id (utils.py `reorg_answer_file`);
  `model_judgment/<judge>/<model>.jsonl` from gen_judgment.py `judgment` (lines 59-124: question_id, model,
  judge, games [{user_prompt, judgment, score}]).

Style control reads the answers' metadata from `model_answer/` beside the judgements (show_result.py), so a
judged export also writes the baseline's answers with the metadata its judgements were scored with. What the
harness knows beyond the official fields (whether each answer finished, which counter gave token_len) goes in
one extra top-level key, `pad_harness`: never inside `metadata`, whose values v2.0's show_result.py turns
into style features in key order (line 140), so one more key there would change or break its fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.benchmarks.arena_hard.formats import JUDGE_SETTINGS
from harness.benchmarks.arena_hard.scoring import (
    ANSWER_FILE_COUNTER,
    OFFICIAL_ENCODING,
    answer_metadata,
    is_official_counter,
)
from harness.benchmarks.arena_hard.style_control import STYLE_KEYS
from harness.benchmarks.base import BenchmarkData, OfficialExport, ScoreResult
from harness.benchmarks.official_files import answer_id, path_component
from harness.errors import DataSourceError, HarnessError
from harness.store import write_text_atomic
from harness.textfiles import check_is_file, read_jsonl_records

EXTRA_KEY = "pad_harness"  # the harness's own fields in an exported record (official readers ignore it)
# shortuuid's default alphabet (upstream's ids are `shortuuid.uuid()`: 22 of these characters).


@dataclass(frozen=True)
class Setting:
    """What the files of one arena_hard benchmark depend on."""

    version: str  # "v0.1" | "v2.0"
    baseline: str  # the baseline model's name (its answers file, v2.0's `baseline` field)
    encoding: str  # the tiktoken encoding of the version's token_len
    label: str  # how messages name the benchmark, e.g. "arena_hard v2.0 (hard_prompt)"


# ------------------------------------------------------------------------------------------- helpers


def _write_jsonl(path: Path, rows: list[dict[str, Any]], ensure_ascii: bool) -> Path:
    # Each writer's own json.dumps settings: v2.0 passes ensure_ascii=False, v0.1's answers do not.
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows))
    return path


def official_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The answer metadata upstream writes, in its order: gen_answer.py `metadata | count_markdown_elements`
    (token_len, header_count, list_count, bold_count), without the harness's `token_counter`."""
    return {key: meta[key] for key in STYLE_KEYS}


def _metadata_of(record: dict[str, Any], text: str, encoding: str) -> dict[str, Any]:
    """The metadata an answer record carries (the one its judgements used), else counted now."""
    meta = record.get("metadata")
    if isinstance(meta, dict) and all(key in meta for key in STYLE_KEYS):
        return meta
    return answer_metadata(text, encoding)


def _text(record: dict[str, Any]) -> str:
    output = record["output"]
    return output[-1] if isinstance(output, list) else str(output)


# ------------------------------------------------------------------------------------------ answers
def answer_row(setting: Setting, model: str, question_id: Any, prompt: str, text: str, meta: dict[str, Any],
               tstamp: float, extra: dict[str, Any]) -> dict[str, Any]:
    """One `model_answer/<model>.jsonl` record in the version's schema (module docstring: the writers)."""
    if setting.version == "v0.1":
        return {"question_id": question_id, "answer_id": answer_id(model, question_id), "model_id": model,
                "choices": [{"index": 0, "turns": [{"content": text}]}], "tstamp": tstamp,
                "conv_metadata": official_metadata(meta), EXTRA_KEY: extra}
    # v2.0: messages are the conversation asked (the harness asks the question alone, no system prompt)
    # followed by the completion dict, whose text upstream reads as messages[-1]["content"]["answer"].
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": {"answer": text}}]
    return {"uid": question_id, "ans_id": answer_id(model, question_id), "model": model, "messages": messages,
            "tstamp": tstamp, "metadata": official_metadata(meta), EXTRA_KEY: extra}


def _sorted_by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # reorg_answer_file: answers sorted by their question id (v0.1 question_id, v2.0 uid).
    return sorted(rows, key=lambda r: r["uid"] if "uid" in r else r["question_id"])


def _item(setting: Setting, data: BenchmarkData, question_id: Any) -> dict[str, Any]:
    for item in data.items:
        if item["id"] == question_id:
            return item
    raise HarnessError(f"{setting.label}: question {question_id!r} of the run's records has no item in the data "
                       f"({data.source}); export the records with the data they were made from")


def model_answer_rows(setting: Setting, data: BenchmarkData, answers: list[dict[str, Any]],
                      export: OfficialExport) -> list[dict[str, Any]]:
    rows = []
    for record in answers:
        item = _item(setting, data, record["id"])
        text = _text(record)
        meta = _metadata_of(record, text, setting.encoding)
        extra = {"finished": record.get("finished"), "token_counter": meta.get("token_counter")}
        rows.append(answer_row(setting, export.model, item["id"], item["prompt"], text, meta, export.tstamp, extra))
    return _sorted_by_id(rows)


def baseline_answer_rows(setting: Setting, data: BenchmarkData, judgements: list[dict[str, Any]],
                         export: OfficialExport) -> list[dict[str, Any]]:
    """The baseline's answers to the judged questions, with the metadata the judgements were scored with
    (style control compares it with the model's)."""
    rows = []
    for record in judgements:
        item = _item(setting, data, record["id"])
        meta = (record.get("metadata") or {}).get("baseline") or item["baseline_metadata"]
        extra = {"token_counter": meta.get("token_counter")}
        rows.append(answer_row(setting, setting.baseline, item["id"], item["prompt"], item["baseline_answer"], meta,
                               export.tstamp, extra))
    return _sorted_by_id(rows)


# ---------------------------------------------------------------------------------------- judgements
def judgement_row(setting: Setting, record: dict[str, Any], model: str, judge: str) -> dict[str, Any]:
    """One `model_judgment/<judge>/<model>.jsonl` record in the version's schema (module docstring)."""
    games = record["games"]
    if setting.version == "v0.1":
        return {"question_id": record["id"], "model": model, "judge": judge,
                "games": [{"user_prompt": g.get("user_prompt"), "judgment": g.get("judgment"), "score": g.get("score")}
                          for g in games]}
    category = record.get("category", "hard_prompt")
    system = JUDGE_SETTINGS[category]["system_prompt"]  # utils/judge_utils.py: the category's judge prompt
    return {"uid": record["id"], "category": category, "judge": judge, "model": model,
            "baseline": record.get("baseline", setting.baseline),
            "games": [{"score": g.get("score"), "judgment": {"answer": g.get("judgment")},
                       "prompt": [{"role": "system", "content": system},
                                  {"role": "user", "content": g.get("user_prompt")}]} for g in games]}


def export_files(setting: Setting, data: BenchmarkData, answers: list[dict[str, Any]],
                 judgements: list[dict[str, Any]] | None, export: OfficialExport) -> list[Path]:
    """`model_answer/<model>.jsonl`; when judged, also `model_judgment/<judge>/<model>.jsonl` and the
    baseline's `model_answer/<baseline>.jsonl` (what show_result.py reads beside the judgements)."""
    answer_dir = export.out / "model_answer"
    written = [_write_jsonl(answer_dir / f"{export.model}.jsonl", model_answer_rows(setting, data, answers, export),
                            ensure_ascii=setting.version == "v0.1")]
    if judgements is None:
        return written
    if not export.judge:
        raise HarnessError(f"{setting.label}: judgements need the judge's name to be exported "
                           "(model_judgment/<judge>/)")
    if export.model != setting.baseline:  # the baseline's own row already is its answers file
        written.append(_write_jsonl(answer_dir / f"{setting.baseline}.jsonl",
                                    baseline_answer_rows(setting, data, judgements, export),
                                    ensure_ascii=setting.version == "v0.1"))
    rows = [judgement_row(setting, r, export.model, export.judge) for r in judgements]  # in scoring order
    path = export.out / "model_judgment" / path_component(export.judge) / f"{export.model}.jsonl"
    written.append(_write_jsonl(path, rows, ensure_ascii=False))  # both versions' gen_judgment.py
    return written


# ---------------------------------------------------------------------------------- reading answers
class _BadRecord(Exception):
    """What is wrong with one record (the reader adds the file and line)."""


def _question_id(row: dict[str, Any]) -> Any:
    qid = row.get("uid", row.get("question_id"))
    if qid is None:
        raise _BadRecord("no question id (neither 'uid' (v2.0) nor 'question_id' (v0.1))")
    return qid


def _answer_text(row: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(answer text, the file's metadata or None) of either schema; upstream reads the answer as
    messages[-1]["content"]["answer"] (v2.0 gen_judgment.py line 39) or choices[0]["turns"][0]["content"]
    (v0.1 gen_judgment.py, lines 80-85)."""
    if "messages" in row:
        messages = row["messages"]
        last = messages[-1] if isinstance(messages, list) and messages else None
        if not isinstance(last, dict) or last.get("role", "assistant") != "assistant":
            raise _BadRecord("no answer: 'messages' does not end with the assistant's message")
        content = last.get("content")
        text = content.get("answer") if isinstance(content, dict) else content
        meta = row.get("metadata")
    else:
        try:
            turn = row["choices"][0]["turns"][0]
        except (KeyError, IndexError, TypeError):
            raise _BadRecord("no answer: neither 'messages' (v2.0) nor 'choices[0].turns[0]' (v0.1)") from None
        text = turn.get("content") if isinstance(turn, dict) else turn
        meta = row.get("conv_metadata")
        if meta is None and isinstance(turn, dict) and "token_len" in turn:
            meta = {"token_len": turn["token_len"]}
    if not isinstance(text, str):
        raise _BadRecord("no answer text (the answer is missing or not a string)")
    return text, meta if isinstance(meta, dict) else None


def _extra(row: dict[str, Any]) -> dict[str, Any]:
    extra = row.get(EXTRA_KEY)
    if extra is None:
        return {}
    if not isinstance(extra, dict) or not isinstance(extra.get("finished", False), bool | None):
        raise _BadRecord(f"'{EXTRA_KEY}' must be an object whose 'finished' is true, false or null")
    return extra


def _record_metadata(text: str, meta: dict[str, Any] | None, extra: dict[str, Any], encoding: str) -> dict[str, Any]:
    """The metadata `generate` would record: the file's (with the counter an export names, else marked as an
    answer file's own count), or counted now when the file has none."""
    if meta is None or not all(key in meta for key in STYLE_KEYS):
        return answer_metadata(text, encoding)
    counter = extra.get("token_counter") or ANSWER_FILE_COUNTER  # an export names its counter
    return {**official_metadata(meta), "token_counter": counter}


def _parse_row(row: dict[str, Any], items: dict[Any, dict[str, Any]], setting: Setting) -> dict[str, Any]:
    qid = _question_id(row)
    if qid not in items:
        raise _BadRecord(f"question {qid!r} is not one of the {len(items)} {setting.label} items this run "
                         "evaluates: an answers file of another benchmark, or of the other version? (A run with "
                         "`subset` evaluates its first items only: give it their answers alone.)")
    text, meta = _answer_text(row)
    extra = _extra(row)
    metadata = _record_metadata(text, meta, extra, setting.encoding)
    return {"id": qid, "category": items[qid]["category"], "output": text, "finished": extra.get("finished"),
            "token_len": metadata["token_len"], "metadata": metadata}


def read_answer_records(path: Path, data: BenchmarkData, label: str,
                        parse: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The records `parse` makes of each line of an answers file, one per item of `data` in its order. A bad
    line, an unknown or repeated question, or a missing item is ONE `DataSourceError` naming the file and the
    first bad record."""
    check_is_file(path, f"{label} answers file", DataSourceError)
    found: dict[Any, tuple[int, dict[str, Any]]] = {}
    for line, row in read_jsonl_records(path, f"{label} answers file", DataSourceError):
        try:
            record = parse(row)
        except _BadRecord as exc:
            raise DataSourceError(f"{path}:{line}: {exc}") from None
        if record["id"] in found:
            raise DataSourceError(f"{path}:{line}: question {record['id']!r} is answered again (first at line "
                                  f"{found[record['id']][0]}); keep one answer per question")
        found[record["id"]] = (line, record)
    for n, item in enumerate(data.items, start=1):
        if item["id"] not in found:
            raise DataSourceError(f"{path}: no answer to question {item['id']!r} (item {n} of the {len(data.items)} "
                                  f"{label} items this run evaluates); the file must answer every one")
    return [found[item["id"]][1] for item in data.items]


def read_answers(path: Path, data: BenchmarkData, setting: Setting) -> list[dict[str, Any]]:
    """`ArenaHard.generate`'s records from a `model_answer/<model>.jsonl` of either schema."""
    items = {item["id"]: item for item in data.items}
    return read_answer_records(Path(path), data, setting.label, lambda row: _parse_row(row, items, setting))


# ------------------------------------------------------------------------------ scoring our exports
def label_approximate_tokens(judgement_file: Path, result: ScoreResult) -> ScoreResult:
    """Keep an exported approximate token count approximate when its judgements are scored again.

    `score_official` takes an answers file's token_len as arena-hard-auto's own count (`avg_tokens`). An
    export of answers counted without the official tiktoken BPE says so in `pad_harness.token_counter`; their
    mean is then `avg_tokens_approx`, as `ArenaHard.score` reports it."""
    first = next(iter(read_jsonl_records(judgement_file, "arena-hard-auto judgement file", DataSourceError)), None)
    if first is None:
        return result
    row = first[1]
    version = "v2.0" if "uid" in row else "v0.1"
    answers = judgement_file.parent.parent.parent / "model_answer" / f"{row.get('model', judgement_file.stem)}.jsonl"
    if not answers.is_file():
        return result
    counters = {str(r[EXTRA_KEY].get("token_counter")) for _, r in read_jsonl_records(answers, "answers file",
                                                                                      DataSourceError)
                if isinstance(r.get(EXTRA_KEY), dict) and r[EXTRA_KEY].get("token_counter")}
    approximate = sorted(c for c in counters if not is_official_counter(c, version))
    if not approximate:
        return result
    for key in [k for k in result.metrics if k == "avg_tokens" or k.endswith("/avg_tokens")]:
        result.metrics[key + "_approx"] = result.metrics.pop(key)
    result.notes.append(f"avg_tokens_approx: {answers} says its answer tokens were counted with "
                        f"{', '.join(approximate)}, not arena-hard-auto {version}'s tiktoken {OFFICIAL_ENCODING[version]}")
    return result
