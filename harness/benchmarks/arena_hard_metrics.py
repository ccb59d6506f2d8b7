"""Arena-Hard metrics from judgement rows: the score and its interval, style control, mean answer tokens.

Used for this harness's own judgements (`ArenaHard.score`) and for arena-hard-auto's judgement files
(`arena_hard_official`). The statistics themselves live in `arena_hard_scoring`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from harness.benchmarks import arena_hard_scoring as S
from harness.benchmarks.base import ScoreResult


def file_metadata(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metadata of an official answer file, marked as such (its token_len is upstream's own count)."""
    return None if meta is None else {**meta, "token_counter": S.ANSWER_FILE_COUNTER}


def score_rows(rows: list[dict[str, Any]], version: str, weight: int = 3, rounds: int = 100, seed: int = 42,
               style_control: bool = False, style_features: str = "both",
               pool: S.StylePool | None = None) -> ScoreResult:
    """Metrics (percentages) from rows {"id", "games": [{"score": label}, ...], "metadata"?}; `pool`: other
    models' games for a joint style-control fit."""
    battles = S.battles_v01(rows, weight) if version == "v0.1" else S.battles_v2(rows, weight)
    notes: list[str] = []
    if version == "v0.1":
        stats = S.score_v01(battles, rounds, seed)
        notes.append(f"v0.1: Bradley-Terry win rate vs baseline, bootstrap 95% CI ({rounds} rounds, seed {seed})")
    else:
        stats = S.score_v2(battles, rounds, seed)
        notes.append(f"v2.0: mean of bootstrap means, 90% CI ({rounds} rounds, seed {seed})")
    metrics: dict[str, float | int | None] = dict(stats)
    if style_control:
        own = _battle_metadata(rows, battles)
        if own is None:
            notes.append("style control skipped: answer metadata missing for some judged questions")
        else:
            controlled, label = _style_controlled(battles, own, version, style_features, rounds, seed, pool)
            metrics.update({f"{k}_uncontrolled": v for k, v in stats.items() if k != "mean"})
            metrics.update(controlled)
            notes.append(label)
    metrics.update({"n_questions": battles.n_questions, "n_games": battles.n_games,
                    "n_games_unparsable": battles.n_games_dropped, "n_battles": len(battles.outcomes)})
    metrics.update(_avg_tokens(rows, version, notes))
    if version == "v2.0":
        metrics["n_questions_dropped"] = battles.n_questions_dropped
    if battles.n_games_dropped:
        notes.append(f"{battles.n_games_dropped} games had no parsable verdict and were dropped"
                     + (" (with their question, as v2.0 does)" if version == "v2.0" else ""))
    per_item = _per_item(rows, battles)
    return ScoreResult(metrics=metrics, notes=notes, per_item=per_item)


def _avg_tokens(rows: list[dict[str, Any]], version: str, notes: list[str]) -> dict[str, float | None]:
    """Mean answer tokens as `avg_tokens` when counted as upstream, else as `avg_tokens_approx` (and a note):
    an approximate count is never shown as arena-hard-auto's."""
    metas = [r["metadata"]["model"] for r in rows
             if (r.get("metadata") or {}).get("model") and "token_len" in r["metadata"]["model"]]
    if not metas:
        return {"avg_tokens": None}
    mean = sum(m["token_len"] for m in metas) / len(metas)
    counters = sorted({str(m.get("token_counter") or "an unrecorded counter") for m in metas})
    if all(S.is_official_counter(c, version) for c in counters):
        return {"avg_tokens": mean}
    notes.append(f"avg_tokens_approx: answer tokens counted with {', '.join(counters)}, an approximation; "
                 f"arena-hard-auto {version} counts them with tiktoken {S.OFFICIAL_ENCODING[version]}, whose "
                 "BPE file is neither in tiktoken's cache nor downloadable here (no trusted package ships it)")
    return {"avg_tokens_approx": mean}


def _per_item(rows: list[dict[str, Any]], battles: S.Battles) -> list[dict[str, Any]]:
    sums: dict[Any, list[float]] = {}
    for qid, outcome in zip(battles.question_ids, battles.outcomes, strict=True):
        sums.setdefault(qid, []).append(float(outcome))
    return [{"id": r["id"], "score": (100 * sum(sums[r["id"]]) / len(sums[r["id"]])) if r["id"] in sums else None}
            for r in rows]


STYLE_KEYS = ("token_len", "header_count", "list_count", "bold_count")


def _battle_metadata(rows: list[dict[str, Any]], battles: S.Battles) -> tuple[list[Any], list[Any]] | None:
    """(model metadata, baseline metadata) per battle, or None when any is missing."""
    metas = {r["id"]: r.get("metadata") or {} for r in rows}
    pairs = [metas.get(q, {}) for q in battles.question_ids]
    if not pairs or any(not (m.get("model") and m.get("baseline")) for m in pairs):
        return None
    model_meta = [m["model"] for m in pairs]
    base_meta = [m["baseline"] for m in pairs]
    if any(k not in m for m in model_meta + base_meta for k in STYLE_KEYS):
        return None
    return model_meta, base_meta


def _style_controlled(battles: S.Battles, own: tuple[list[Any], list[Any]], version: str, features: str,
                      rounds: int, seed: int, pool: S.StylePool | None) -> tuple[dict[str, float | None], str]:
    """The style-controlled score of this model (model 0) and the label saying how it was fitted."""
    model_meta, base_meta = list(own[0]), list(own[1])
    outcomes, ids = [battles.outcomes], [np.zeros(len(battles.outcomes), dtype=int)]
    if pool is not None:
        for k, (o, mm, bm) in enumerate(zip(pool.outcomes, pool.model_meta, pool.base_meta, strict=True)):
            outcomes.append(o)
            ids.append(np.full(len(o), k + 1, dtype=int))
            model_meta += mm
            base_meta += bm
    joint = replace(battles, outcomes=np.concatenate(outcomes))
    model_ids = np.concatenate(ids)
    build = S.style_features_v01 if version == "v0.1" else S.style_features_v2
    style = build(model_meta, base_meta, features)
    stats = (S.score_v01(joint, rounds, seed, style, model_ids) if version == "v0.1"
             else S.score_v2_style(joint, style, rounds, seed, model_ids))
    if pool is None:
        label = (f"single-model style control ({features}): style coefficients fitted on this model's games "
                 "only; arena-hard-auto's leaderboard fits them jointly over every model's games, so this is not "
                 "its style-controlled score (params.style_control_pool names judgements to fit jointly with)")
    else:
        label = (f"joint style control ({features}) as arena-hard-auto's show_result.py: fitted with "
                 f"{len(pool.models)} other models' games from {pool.source}")
    return stats, label
