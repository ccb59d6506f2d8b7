"""Scoring arena-hard-auto's own judgement files (`pad-harness score arena_hard --judgments FILE`).

Layout upstream: `data/<bench>/model_judgment/<judge>/<model>.jsonl`, answers in
`data/<bench>/model_answer/<model>.jsonl`. The v0.1 format has `question_id` and games
`[{"user_prompt", "judgment", "score": "A>B"}, ...]`; v2.0 has `uid`, `category`, `baseline` and games
`[{"score", "judgment", "prompt"}, ...]` (a game may be null). v2.0 files are scored per category.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.benchmarks.arena_hard.formats import JUDGE_SETTINGS
from harness.benchmarks.arena_hard.prompts import parse_answer, read_rows
from harness.benchmarks.arena_hard.scoring import (
    battles_v01,
    battles_v2,
    file_metadata,
    score_rows,
)
from harness.benchmarks.arena_hard.style_control import STYLE_KEYS, StylePool
from harness.benchmarks.base import ScoreResult
from harness.errors import DataSourceError


def _answers(answer_dir: Path | None, model: str) -> dict[Any, dict[str, Any] | None] | None:
    if answer_dir is None or not (answer_dir / f"{model}.jsonl").is_file():
        return None
    return {qid: file_metadata(meta)
            for qid, _m, _t, meta in (parse_answer(a) for a in read_rows(answer_dir / f"{model}.jsonl"))}


def _judgement_rows(path: Path) -> list[dict[str, Any]]:
    raw = read_rows(path)  # not JSON lines: one error naming the file and the line
    if not raw or "games" not in raw[0]:
        raise DataSourceError(f"arena_hard: {path} has no arena-hard-auto judgement rows (no 'games' key)")
    return raw


def load_style_pool(folder: Path, version: str, category: str, baseline: str, weight: int = 3,
                    exclude_model: str | None = None) -> StylePool:
    """Every other model's games in an arena-hard-auto judgement folder (`model_judgment/<judge>/*.jsonl`),
    with the answer metadata of `../../model_answer/`, for the joint style-control fit that show_result.py
    does (v2.0: `print_leaderboard_with_style_features`; v0.1 (2024): `construct_style_matrices` + `fit_bt`)."""
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise DataSourceError(f"arena_hard: style_control_pool {str(folder)!r} must be a folder of "
                              "arena-hard-auto judgement files (data/<bench>/model_judgment/<judge>/*.jsonl)")
    answer_dir = folder.parent.parent / "model_answer"
    base_meta = _answers(answer_dir, baseline)
    if base_meta is None:
        raise DataSourceError(f"arena_hard: joint style control needs the baseline's answers with their metadata "
                              f"at {answer_dir / (baseline + '.jsonl')} (arena-hard-auto's model_answer/ layout)")
    pool = StylePool(source=str(folder), models=[], outcomes=[], model_meta=[], base_meta=[])
    for path in files:
        raw = _judgement_rows(path)
        model = str(raw[0].get("model", path.stem))
        if model in (exclude_model, baseline):
            continue
        rows = [{"id": r.get("uid", r.get("question_id")), "games": r["games"]} for r in raw
                if version == "v0.1" or r.get("category") == category]
        if not rows:
            continue
        battles = battles_v01(rows, weight) if version == "v0.1" else battles_v2(rows, weight)
        metas = _answers(answer_dir, model) or {}
        model_meta = [metas.get(q) for q in battles.question_ids]
        baseline_meta = [base_meta.get(q) for q in battles.question_ids]
        if any(m is None or any(k not in m for k in STYLE_KEYS) for m in model_meta + baseline_meta):
            raise DataSourceError(
                f"arena_hard: style_control_pool model {model!r}: answer metadata ({', '.join(STYLE_KEYS)}) is "
                f"missing for some judged questions in {answer_dir} (model {model}.jsonl, baseline "
                f"{baseline}.jsonl); joint style control needs it for every game")
        pool.models.append(model)
        pool.outcomes.append(battles.outcomes)
        pool.model_meta.append([m for m in model_meta if m is not None])
        pool.base_meta.append([m for m in baseline_meta if m is not None])
    if not pool.models:
        raise DataSourceError(f"arena_hard: style_control_pool {str(folder)!r} holds no other model's judgements"
                              + (f" in category {category}" if version == "v2.0" else ""))
    return pool


def score_official_file(path: Path, style_control: bool = False, rounds: int = 100, seed: int = 42,
                        style_pool: Path | None = None) -> ScoreResult:
    if not path.is_file():
        raise DataSourceError(f"arena_hard: {path} is not a file; pass one model_judgment/<judge>/<model>.jsonl")
    raw = _judgement_rows(path)
    version = "v2.0" if "uid" in raw[0] else "v0.1"
    model = str(raw[0].get("model", path.stem))
    sibling = path.parent.parent.parent / "model_answer"
    answer_dir = sibling if sibling.is_dir() else None
    model_meta = _answers(answer_dir, model)

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in raw:
        category = r.get("category", "arena-hard-v0.1") if version == "v2.0" else "arena-hard-v0.1"
        groups.setdefault(category, []).append({"id": r.get("uid", r.get("question_id")), "category": category,
                                                "games": [g if g is None else {"score": g.get("score")}
                                                          for g in r["games"]]})
    order = sorted(groups, key=lambda c: (c != "hard_prompt", c))
    metrics: dict[str, float | int | None] = {}
    notes = [f"arena-hard-auto {version} judgements of {model} from {path}"]
    per_item: list[dict[str, Any]] = []
    for n, category in enumerate(order):
        rows = groups[category]
        named = [r["baseline"] for r in raw if r.get("baseline") and r.get("category", category) == category]
        baseline = named[0] if named else JUDGE_SETTINGS.get(category, JUDGE_SETTINGS["arena-hard-v0.1"])["baseline"]
        base_meta = _answers(answer_dir, baseline) if style_control else None
        for row in rows:
            m = (model_meta or {}).get(row["id"])
            b = (base_meta or {}).get(row["id"])
            row["metadata"] = {"model": m, "baseline": b}
        pool = (load_style_pool(style_pool, version, category, baseline, exclude_model=model)
                if style_control and style_pool is not None and base_meta is not None else None)
        result = score_rows(rows, version, 3, rounds, seed, style_control and base_meta is not None, pool=pool)
        if style_control and base_meta is None:
            result.notes.append(f"style control skipped: {baseline}.jsonl not found beside the judgements")
        if model_meta is not None:
            # Upstream averages token_len over every answer in the model's answer file.
            lens = [m["token_len"] for m in model_meta.values() if m and "token_len" in m]
            result.metrics["avg_tokens"] = sum(lens) / len(lens) if lens else None
        prefix = "" if n == 0 else f"{category}/"
        metrics.update({f"{prefix}{k}": v for k, v in result.metrics.items()})
        if n == 0 and version == "v2.0":
            notes.append(f"headline category: {category} (baseline {baseline})")
        elif version == "v2.0":
            notes.append(f"category {category} (baseline {baseline}) under '{category}/...' keys")
        notes += [f"[{category}] {t}" if len(order) > 1 else t for t in result.notes]
        per_item += [{**it, "category": category} for it in result.per_item]
    return ScoreResult(metrics=metrics, notes=notes, per_item=per_item)
