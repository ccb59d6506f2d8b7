"""FastChat's MT-Bench files: one row's answers and single-grading judgements written as FastChat's llm_judge
writes them (`pad-harness export`), and a FastChat answers file read back into the records
`MTBench.generate` writes (an external row).

Sources (lm-sys/FastChat, commit 0e6d3e4, fastchat/llm_judge/):

* `model_answer/<model>.jsonl`: gen_model_answer.py `get_model_answers` (lines 183-190: question_id,
  answer_id, model_id, choices [{index, turns}], tstamp; `json.dumps` with its defaults), sorted by
  question_id as `reorg_answer_file` (line 193) leaves it. The reference answers
  (data/mt_bench/reference_answer/gpt-4.jsonl) have the same fields.
* `model_judgment/<judge>_single.jsonl`: gen_judgment.py (`--mode single`: the file name, line 238) of
  common.py `play_a_match_single` records (lines 209-218: question_id, model, judge = [judge model, prompt
  name], user_prompt, judgment, score, turn, tstamp).

What the harness knows beyond FastChat's fields (whether each turn finished, the sampling temperature) goes in
one extra top-level key, `pad_harness`, which FastChat's readers never look at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.benchmarks.base import BenchmarkData, OfficialExport
from harness.benchmarks.official_files import answer_id, path_component
from harness.errors import DataSourceError, HarnessError
from harness.store import write_text_atomic
from harness.textfiles import check_is_file, read_jsonl_records

LABEL = "mt_bench"
EXTRA_KEY = "pad_harness"  # the harness's own fields in an exported record (FastChat's readers ignore it)


def judgement_file_name(judge: str) -> str:
    """`<judge>_single.jsonl` (gen_judgment.py), the judge's name made one file name (a hub id's '/' would
    otherwise be a folder); the records keep the full name."""
    return f"{path_component(judge)}_single.jsonl"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    # FastChat writes both files with json.dumps' defaults (ASCII escapes).
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------ writing
def answer_row(record: dict[str, Any], model: str, tstamp: float) -> dict[str, Any]:
    """One `model_answer/<model>.jsonl` record (gen_model_answer.py lines 183-190) of a `generate` record."""
    turns = record["output"] if isinstance(record["output"], list) else [record["output"]]
    extra = {"finished": record.get("finished"), "temperature": record.get("temperature")}
    return {"question_id": record["id"], "answer_id": answer_id(model, record["id"]), "model_id": model,
            "choices": [{"index": 0, "turns": list(turns)}], "tstamp": tstamp, EXTRA_KEY: extra}


def judgement_row(record: dict[str, Any], model: str, judge: str, tstamp: float) -> dict[str, Any]:
    """One `<judge>_single.jsonl` record (common.py `play_a_match_single`, lines 209-218) of a `judge` record."""
    return {"question_id": record.get("question_id", record["id"]), "model": model,
            "judge": [judge, record["judge_prompt"]], "user_prompt": record["user_prompt"],
            "judgment": record["judgment"], "score": record["score"], "turn": record["turn"], "tstamp": tstamp}


def export_files(answers: list[dict[str, Any]], judgements: list[dict[str, Any]] | None,
                 export: OfficialExport) -> list[Path]:
    """`model_answer/<model>.jsonl` and, when judged, `model_judgment/<judge>_single.jsonl`."""
    rows = sorted((answer_row(r, export.model, export.tstamp) for r in answers),
                  key=lambda row: row["question_id"])  # reorg_answer_file: sorted by question id
    written = [_write_jsonl(export.out / "model_answer" / f"{export.model}.jsonl", rows)]
    if judgements is None:
        return written
    if not export.judge:
        raise HarnessError(f"{LABEL}: judgements need the judge's name to be exported (<judge>_single.jsonl)")
    judged = [judgement_row(r, export.model, export.judge, export.tstamp) for r in judgements]
    written.append(_write_jsonl(export.out / "model_judgment" / judgement_file_name(export.judge), judged))
    return written


# ------------------------------------------------------------------------------------------ reading
class _BadRecord(Exception):
    """What is wrong with one record (the reader adds the file and line)."""


def _turns(row: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """The answer's turns as FastChat's judge reads them: choices[0]["turns"] (common.py `run_judge_single`,
    lines 147-148), one string per turn of the question."""
    try:
        turns = row["choices"][0]["turns"]
    except (KeyError, IndexError, TypeError):
        raise _BadRecord("no answer: no 'choices[0].turns'") from None
    if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
        raise _BadRecord("no answer: 'choices[0].turns' must be a list of strings")
    if len(turns) != len(item["turns"]):
        raise _BadRecord(f"question {item['id']!r} has {len(item['turns'])} turns, this answer {len(turns)}")
    return turns


def _extra(row: dict[str, Any], n_turns: int) -> dict[str, Any]:
    extra = row.get(EXTRA_KEY)
    if extra is None:
        return {}
    finished = extra.get("finished") if isinstance(extra, dict) else "not an object"
    if finished is not None and not (isinstance(finished, list) and len(finished) == n_turns
                                     and all(isinstance(f, bool) for f in finished)):
        raise _BadRecord(f"'{EXTRA_KEY}.finished' must be null or one true/false per turn ({n_turns})")
    return extra if isinstance(extra, dict) else {}


def _parse_row(row: dict[str, Any], items: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    qid = row.get("question_id")
    if qid is None:
        raise _BadRecord("no 'question_id'")
    if qid not in items:
        raise _BadRecord(f"question {qid!r} is not one of the {len(items)} {LABEL} items this run evaluates: an "
                         "answers file of another benchmark? (A run with `subset` evaluates its first items only: "
                         "give it their answers alone.)")
    turns = _turns(row, items[qid])
    extra = _extra(row, len(turns))
    return {"id": qid, "category": items[qid]["category"], "output": turns, "finished": extra.get("finished"),
            "temperature": extra.get("temperature")}


def read_answers(path: Path, data: BenchmarkData) -> list[dict[str, Any]]:
    """`MTBench.generate`'s records from a FastChat `model_answer/<model>.jsonl`, one per item of `data` in its
    order (`finished` and `temperature` where an export wrote them, else None). A bad line, an unknown or
    repeated question, a wrong number of turns or a missing item is ONE `DataSourceError` naming the file and
    the first bad record."""
    what = f"{LABEL} answers file"
    check_is_file(path, what, DataSourceError)
    items = {item["id"]: item for item in data.items}
    found: dict[Any, tuple[int, dict[str, Any]]] = {}
    for line, row in read_jsonl_records(path, what, DataSourceError):
        try:
            record = _parse_row(row, items)
        except _BadRecord as exc:
            raise DataSourceError(f"{path}:{line}: {exc}") from None
        if record["id"] in found:
            raise DataSourceError(f"{path}:{line}: question {record['id']!r} is answered again (first at line "
                                  f"{found[record['id']][0]}); keep one answer per question")
        found[record["id"]] = (line, record)
    for n, item in enumerate(data.items, start=1):
        if item["id"] not in found:
            raise DataSourceError(f"{path}: no answer to question {item['id']!r} (item {n} of the {len(data.items)} "
                                  f"{LABEL} items this run evaluates); the file must answer every one")
    return [found[item["id"]][1] for item in data.items]
