"""A few answers per benchmark of one row, read from the artifacts its results.json entry names.

Per item: the prompt (where an artifact holds it), the row's answer, its score (the benchmark's own per-item
score, `BenchmarkResult.per_item`) and the verdict (the judgement record's short fields: a preference, a
rating, a match flag, arena-hard's game verdicts). Nothing is recomputed and no benchmark data is loaded,
so it works on a run dir copied from the machine that made it; a missing artifact skips that benchmark.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results import RowResult
from harness.tracking.base import Table

SAMPLES_PER_BENCHMARK = 3
TEXT_LIMIT = 2000  # characters of a prompt or an answer: enough to read it, small enough for any tracker
SHORT_VALUE = 40  # a judgement's string field longer than this is text (a judge's reasoning), not a verdict
COLUMNS = ["benchmark", "id", "prompt", "answer", "score", "verdict"]
# Where the artifacts keep the item's prompt, first found wins: the answer record, its `doc`, the judgement.
PROMPT_FIELDS = ("instruction", "prompt", "question", "turns", "messages")
NOT_A_VERDICT = {"id", "output", "user_prompt", *PROMPT_FIELDS}  # shown in their own columns (or the answer)


def answer_samples(row: RowResult, run_dir: Path, per_benchmark: int = SAMPLES_PER_BENCHMARK) -> Table:
    lines: list[list[Any]] = []
    judged_dirs = row.artifacts.get("judgements") or {}
    for bench, answers_dir in sorted((row.artifacts.get("answers") or {}).items()):
        answers = _read_first(run_dir / answers_dir / "answers.jsonl", per_benchmark)
        judged = judged_dirs.get(bench)
        wanted = {str(a.get("id")) for a in answers}
        judgements = _read_matching(run_dir / judged / "judgements.jsonl", wanted) if judged else {}
        per_item = row.benchmarks[bench].per_item if bench in row.benchmarks else []
        for answer in answers:
            key = str(answer.get("id"))
            verdicts = judgements.get(key, [])
            lines.append([bench, key, _clip(_prompt(answer, verdicts)), _clip(_answer_text(answer.get("output"))),
                          _item_score(per_item, key), "; ".join(_verdict(j) for j in verdicts)])
    return Table(list(COLUMNS), lines)


def _read_first(path: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` records of a JSONL artifact ([] when it is missing: a partly copied run dir)."""
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if len(records) >= n:
                break
            if line.strip():
                records.append(_parse(line, path))
    return records


def _read_matching(path: Path, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Judgement records by item id, for the sampled ids only (MT-Bench has one per turn)."""
    found: dict[str, list[dict[str, Any]]] = {}
    if not path.is_file():
        return found
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = _parse(line, path)
                if str(record.get("id")) in ids:
                    found.setdefault(str(record.get("id")), []).append(record)
    return found


def _parse(line: str, path: Path) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not JSON lines ({exc}); the artifact is damaged: rerun to rebuild it") from None
    return record if isinstance(record, dict) else {"output": record}


def _prompt(answer: dict[str, Any], judgements: list[dict[str, Any]]) -> str:
    for record in [answer, answer.get("doc"), *judgements, *(j.get("doc") for j in judgements)]:
        if not isinstance(record, dict):
            continue
        for name in PROMPT_FIELDS:
            if record.get(name):
                return _answer_text(record[name])
    # MT-Bench and Arena-Hard keep only the judge's prompt, which starts with the question.
    for j in judgements:
        games = j.get("games")
        for source in [j, *(g for g in games if isinstance(g, dict))] if isinstance(games, list) else [j]:
            if isinstance(source.get("user_prompt"), str):
                return "[judge prompt] " + source["user_prompt"]
    return ""


def _answer_text(value: Any) -> str:
    """A single answer, a multi-turn answer (one string per turn) or a chat (messages) as one text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value[0] if len(value) == 1 else "\n\n".join(f"[turn {i + 1}] {v}" for i, v in enumerate(value))
    if isinstance(value, list) and all(isinstance(v, dict) and "content" in v for v in value):
        return "\n\n".join(f"[{v.get('role', '')}] {v['content']}" for v in value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f" [... {len(text) - TEXT_LIMIT} more characters]"


def _item_score(per_item: list[dict[str, Any]], key: str) -> float | None:
    """The benchmark's score of the item (the mean of its turns where it scores turns)."""
    scores = [float(p["score"]) for p in per_item
              if str(p.get("id")) == key and isinstance(p.get("score"), int | float) and math.isfinite(p["score"])]
    return sum(scores) / len(scores) if scores else None


def _verdict(judgement: dict[str, Any]) -> str:
    """The judgement's short fields (`turn=1, score=8.0`); long text (answers, the judge's reasoning) left out."""
    parts = []
    for name, value in judgement.items():
        if name in NOT_A_VERDICT:
            continue
        if name == "games" and isinstance(value, list):  # arena-hard: one verdict per game (answer order)
            value = ", ".join(str(g.get("score")) for g in value if isinstance(g, dict))
        if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= SHORT_VALUE
                                                      and "\n" not in value):
            parts.append(f"{name}={value}")
    return ", ".join(parts)
