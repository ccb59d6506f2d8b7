"""Arena-Hard style control's inputs (length and markdown), re-implemented from lmarena/arena-hard-auto: the
answers' style features as each version builds them, the battles' answer metadata, and the joint design with
other models' games (`StylePool`). The fits themselves are `scoring`'s (`score_v01` with a style matrix,
`score_v2_style`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StylePool:
    """Other models' games against the same baseline, for upstream's joint style-control fit: per model, its
    battle outcomes (as `Battles.outcomes`) and, per battle, its answer's and the baseline's metadata."""

    source: str
    models: list[str]
    outcomes: list[np.ndarray]
    model_meta: list[list[dict[str, Any]]]
    base_meta: list[list[dict[str, Any]]]


STYLE_KEYS = ("token_len", "header_count", "list_count", "bold_count")


def style_features_v01(model_meta: Sequence[dict[str, Any]], base_meta: Sequence[dict[str, Any]],
                       features: str = "both") -> np.ndarray:
    """`construct_style_matrices`: (baseline - model) / (baseline + model + 1), standardised (ddof=0)."""
    keys = _style_keys(features)
    a = np.array([[_total(m[k]) for k in keys] for m in base_meta], dtype=float)
    b = np.array([[_total(m[k]) for k in keys] for m in model_meta], dtype=float)
    diff = (a - b) / (a + b + 1.0)
    return _standardise(diff, ddof=0)


def style_features_v2(model_meta: Sequence[dict[str, Any]], base_meta: Sequence[dict[str, Any]],
                      features: str = "both") -> np.ndarray:
    """`print_leaderboard_with_style_features`: length (m-b)/(m+b); markdown densities per token,
    counts / (token_len + 1), compared as (dm-db)/(dm+db+1); standardised with torch.std (ddof=1).
    Signs: positive favours the model."""
    keys = ["token_len", "header_count", "list_count", "bold_count"]
    m = np.array([[_total(x[k]) for k in keys] for x in model_meta], dtype=float)
    b = np.array([[_total(x[k]) for k in keys] for x in base_meta], dtype=float)
    out = np.zeros_like(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 0] = (m[:, 0] - b[:, 0]) / (m[:, 0] + b[:, 0])
        # arena-hard-auto show_result.py lines 156-157 (v2.0 release, commit 404392d):
        # model_md_density = model_feature_tensor[:, 1:] / (model_feature_tensor[:, :1] + 1)
        md, bd = m[:, 1:] / (m[:, :1] + 1), b[:, 1:] / (b[:, :1] + 1)
        out[:, 1:] = (md - bd) / (md + bd + 1)
    out = np.nan_to_num(out)  # two empty answers (token_len 0) give 0/0 in the length feature: no difference
    cols = {"both": slice(0, 4), "length": slice(0, 1), "markdown": slice(1, 4)}[features]
    return _standardise(out, ddof=1)[:, cols]


def _style_keys(features: str) -> list[str]:
    length, markdown = ["token_len"], ["header_count", "list_count", "bold_count"]
    return {"both": length + markdown, "length": length, "markdown": markdown}[features]


def _total(value: Any) -> float:
    return float(sum(value.values())) if isinstance(value, dict) else float(value)


def _standardise(x: np.ndarray, ddof: int) -> np.ndarray:
    std = x.std(axis=0, ddof=ddof) if len(x) > ddof else np.zeros(x.shape[1])
    # A constant feature (e.g. no answer uses headers) is NaN upstream; it carries no information: zero it.
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (x - x.mean(axis=0)) / safe, 0.0)


def battle_metadata(rows: list[dict[str, Any]], question_ids: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """(model metadata, baseline metadata) per battle (the question of each in `question_ids`), or None when
    any is missing."""
    metas = {r["id"]: r.get("metadata") or {} for r in rows}
    pairs = [metas.get(q, {}) for q in question_ids]
    if not pairs or any(not (m.get("model") and m.get("baseline")) for m in pairs):
        return None
    model_meta = [m["model"] for m in pairs]
    base_meta = [m["baseline"] for m in pairs]
    if any(k not in m for m in model_meta + base_meta for k in STYLE_KEYS):
        return None
    return model_meta, base_meta


def joint_style_design(outcomes: np.ndarray, own: tuple[list[Any], list[Any]], version: str, features: str,
                       pool: StylePool | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outcomes, model ids, style matrix) of the style-controlled fit: this model's battles (model 0, with its
    answers' and the baseline's metadata `own`) followed by each pool model's (models 1, 2, ...), the style
    features built over all of them as `version` builds them."""
    model_meta, base_meta = list(own[0]), list(own[1])
    all_outcomes, ids = [outcomes], [np.zeros(len(outcomes), dtype=int)]
    if pool is not None:
        for k, (o, mm, bm) in enumerate(zip(pool.outcomes, pool.model_meta, pool.base_meta, strict=True)):
            all_outcomes.append(o)
            ids.append(np.full(len(o), k + 1, dtype=int))
            model_meta += mm
            base_meta += bm
    build = style_features_v01 if version == "v0.1" else style_features_v2
    return np.concatenate(all_outcomes), np.concatenate(ids), build(model_meta, base_meta, features)


def style_fit_label(features: str, pool: StylePool | None) -> str:
    """What the report says of a style-controlled score: a single-model fit, or upstream's joint one."""
    if pool is None:
        return (f"single-model style control ({features}): style coefficients fitted on this model's games "
                "only; arena-hard-auto's leaderboard fits them jointly over every model's games, so this is not "
                "its style-controlled score (params.style_control_pool names judgements to fit jointly with)")
    return (f"joint style control ({features}) as arena-hard-auto's show_result.py: fitted with "
            f"{len(pool.models)} other models' games from {pool.source}")
