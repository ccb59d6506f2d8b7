"""Arena-Hard statistics, re-implemented from lmarena/arena-hard-auto (not installable); verdicts: `formats`.

Two scorings exist upstream and they differ in more than the numbers they print:

* v0.1 (`show_result.py` + `utils_math.py` of the 2024 leaderboard): each game becomes battles between the
  baseline (model_a) and the model (model_b); A>>B-style verdicts count `weight` (3) times; a game whose
  label is not one of the five official ones is dropped on its own. Ratings come from an unpenalised
  Bradley-Terry logistic fit on the duplicated-battle design (a tie is one win for each side), the score is
  the predicted win rate against the baseline, and the 95% interval comes from percentiles 2.5/97.5 of
  100 bootstrap refits over resampled battles.
* v2.0 (`show_result.py` + `utils/math_utils.py` of 2025): each question contributes a list of outcomes in
  [0, 1] (strong verdicts repeated `weight` times); a question with either game unparsable is dropped whole.
  The score is the mean of 100 bootstrap means over those outcomes, with quantiles 0.05/0.95 (90%).

Bootstrap resampling draws `RandomState(seed).choice(n, n)` per round, which is what pandas'
`sample(frac=1, replace=True)` draws from numpy's global state in the official scripts.
Style control (length and markdown) follows each version's own feature construction (`style_control`) and
fit (here). Upstream fits the style coefficients jointly over every model's games; given only this model's
games the fit is a "single-model" one (the caller labels it), and given other models' games (`model_ids`) it
is the joint one.

The metrics from judgement rows (the score and its interval, style control, mean answer tokens) are built at
the end, for this harness's own judgements (`ArenaHard.score`) and for arena-hard-auto's judgement files
(`official`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from harness.benchmarks.arena_hard.formats import V01_LABELS, V2_LABEL_TO_A_SCORE
from harness.benchmarks.arena_hard.style_control import (
    StylePool,
    battle_metadata,
    joint_style_design,
    style_fit_label,
)

# The style features stay importable from here, where they lived before style control had its own module.
from harness.benchmarks.arena_hard.style_control import style_features_v01 as style_features_v01
from harness.benchmarks.arena_hard.style_control import style_features_v2 as style_features_v2
from harness.benchmarks.arena_hard.tokens import INSTALL_HINT, tiktoken_encoding
from harness.benchmarks.base import ScoreResult


# ----------------------------------------------------------------------------------------------- battles
@dataclass
class Battles:
    """Outcomes for the model against the baseline, one row per (weighted) battle, with the question id
    and index into `features` of each row (style control needs per-question answer features)."""

    outcomes: np.ndarray  # v0.1: 1 model win, 0 baseline win, 0.5 tie; v2.0: score in [0, 1]
    question_ids: list[Any]
    n_questions: int
    n_games: int
    n_games_dropped: int
    n_questions_dropped: int


def battles_v01(rows: Sequence[dict[str, Any]], weight: int = 3) -> Battles:
    """`get_battles_from_row` for both games: game 1 has the baseline as A, game 2 has it as B."""
    outcomes: list[float] = []
    qids: list[Any] = []
    dropped = n_games = 0
    for row in rows:
        for g, game in enumerate(row["games"][:2]):
            n_games += 1
            label = None if game is None else game.get("score")
            if label not in V01_LABELS:
                dropped += 1
                continue
            model_points, strong = V01_LABELS[label]
            if g == 1:  # positions swapped: the model is A
                model_points = 1.0 - model_points
            reps = weight if strong else 1
            outcomes += [model_points] * reps
            qids += [row["id"]] * reps
    return Battles(np.asarray(outcomes, dtype=float), qids, len(rows), n_games, dropped, 0)


def battles_v2(rows: Sequence[dict[str, Any]], weight: int = 3) -> Battles:
    """`load_judgments`: scores = label_to_score[game2] + [1 - s for s in label_to_score[game1]]."""
    outcomes: list[float] = []
    qids: list[Any] = []
    dropped_q = dropped_g = 0
    for row in rows:
        games = list(row["games"][:2])
        labels = [None if g is None else g.get("score") for g in games]
        bad = [lab not in V2_LABEL_TO_A_SCORE for lab in labels] + [False] * (2 - len(labels))
        if len(labels) < 2 or any(bad):
            # Upstream drops None verdicts here; an unknown label would crash its dict lookup, so we
            # drop it the same way and count it instead.
            dropped_q += 1
            dropped_g += sum(bad) + (2 - len(labels))
            continue
        g2_score, g2_strong = V2_LABEL_TO_A_SCORE[str(labels[1])]
        g1_score, g1_strong = V2_LABEL_TO_A_SCORE[str(labels[0])]
        scores = [g2_score] * (weight if g2_strong else 1) + [1.0 - g1_score] * (weight if g1_strong else 1)
        outcomes += scores
        qids += [row["id"]] * len(scores)
    return Battles(np.asarray(outcomes, dtype=float), qids, len(rows), 2 * len(rows), dropped_g, dropped_q)


# ------------------------------------------------------------------------------------- logistic fitting
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.0, max_iter: int = 100,
                 tol: float = 1e-10) -> np.ndarray:
    """Minimise sum(logloss(sigmoid(x @ w), y)) + l2/2 * |w|^2 by damped Newton (y may be fractional).

    l2 = 0 is sklearn's `penalty=None`; l2 = 1 is its default `C=1.0`. On separable data the unpenalised
    optimum is at infinity: we stop after `max_iter`, with the win rate already at 0 or 100 to print precision.
    """
    w = np.zeros(x.shape[1])

    def objective(v: np.ndarray) -> float:
        z = x @ v
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * v @ v)

    current = objective(w)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + (l2 + 1e-12) * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        t, trial = 1.0, objective(w - step)
        while trial > current and t > 1e-8:  # backtracking keeps Newton monotone on flat regions
            t /= 2
            trial = objective(w - t * step)
        if trial > current:
            break
        w = w - t * step
        improvement, current = current - trial, trial
        if np.max(np.abs(t * step)) < tol or improvement < tol * max(1.0, abs(current)):
            break
    return w


def _sigmoid(z: float) -> float:
    return float(0.5 * (1.0 + np.tanh(0.5 * z)))  # no overflow on separable data's huge ratings


def _resample(n: int, rounds: int, seed: int) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.choice(n, size=n, replace=True) for _ in range(rounds)]


def bt_win_rate_v01(outcomes: np.ndarray, style: np.ndarray | None = None,
                    model_ids: np.ndarray | None = None) -> float:
    """P(model 0 beats baseline) from the v0.1 fit on the duplicated design (`compute_mle_elo` / `fit_bt`).

    Columns: baseline, then one per model (each +-log 10), then normalised style features. `model_ids`
    (default: all 0) says which model played each battle; other models only matter with style control,
    whose penalised fit shares the style coefficients. Without style control the battle graph is a star
    and the fit of this model's battles alone equals the leaderboard's for this model.
    """
    n = len(outcomes)
    log10 = math.log(10)
    ties = outcomes == 0.5
    # Design as in upstream: rows twice; y = 1 when model_a (baseline) wins; a tie is y=1 then y=0.
    y = np.concatenate([(outcomes == 0.0).astype(float), (outcomes == 0.0).astype(float)])
    y[:n][ties] = 1.0
    if style is None:
        # Unpenalised: only the rating difference is identified; anchor the model's rating at 0.
        keep = np.arange(n) if model_ids is None else np.flatnonzero(model_ids == 0)
        x = np.full((2 * len(keep), 1), log10)
        d = fit_logistic(x, np.concatenate([y[:n][keep], y[n:][keep]]))[0]  # baseline - model, log10 units
    else:
        ids = np.zeros(n, dtype=int) if model_ids is None else np.asarray(model_ids, dtype=int)
        n_models = int(ids.max()) + 1
        x = np.zeros((2 * n, 1 + n_models + style.shape[1]))
        x[:, 0] = log10
        x[np.arange(2 * n), 1 + np.concatenate([ids, ids])] = -log10
        x[:, 1 + n_models:] = np.concatenate([style, style])
        w = fit_logistic(x, y, l2=1.0)  # `fit_bt` keeps sklearn's default L2 (C=1) over every coefficient
        d = w[0] - w[1]
    # predict_win_rate: 1 / (1 + 10 ** ((elo_baseline - elo_model) / 400)), elo = 400 * w + const
    return _sigmoid(-math.log(10) * float(d))


def score_v01(b: Battles, rounds: int, seed: int, style: np.ndarray | None = None,
              model_ids: np.ndarray | None = None) -> dict[str, float | None]:
    """Point estimate and bootstrap 95% interval of model 0, as percentages (`get_win_rate_column` * 100).
    `b.outcomes`, `style` and `model_ids` hold every battle of the fit (all models' for a joint fit)."""
    if len(b.outcomes) == 0:
        return {"score": None, "ci_low": None, "ci_high": None}  # nothing judged: no number, not NaN
    point = bt_win_rate_v01(b.outcomes, style, model_ids)
    boots = [bt_win_rate_v01(b.outcomes[i], None if style is None else style[i],
                             None if model_ids is None else model_ids[i])
             for i in _resample(len(b.outcomes), rounds, seed)]
    # Percentiles of ratings map monotonically to percentiles of win rates.
    return {"score": 100 * point, "ci_low": 100 * float(np.percentile(boots, 2.5)),
            "ci_high": 100 * float(np.percentile(boots, 97.5))}


def score_v2(b: Battles, rounds: int, seed: int) -> dict[str, float | None]:
    """Mean of bootstrap means with quantiles 0.05/0.95, as percentages; `mean` is the plain mean."""
    if len(b.outcomes) == 0:
        return {"score": None, "ci_low": None, "ci_high": None, "mean": None}
    means = np.array([b.outcomes[i].mean() for i in _resample(len(b.outcomes), rounds, seed)])
    return {"score": 100 * float(means.mean()), "ci_low": 100 * float(np.quantile(means, 0.05)),
            "ci_high": 100 * float(np.quantile(means, 0.95)), "mean": 100 * float(b.outcomes.mean())}


def score_v2_style(b: Battles, style: np.ndarray, rounds: int, seed: int,
                   model_ids: np.ndarray | None = None) -> dict[str, float | None]:
    """`bootstrap_pairwise_model(loss_type="bt")`: unpenalised BT on [model(+1)/baseline(-1), style];
    score = median of model 0's bootstrap win rates, interval = quantiles 0.05/0.95. With `model_ids`, every
    model of the fit gets its own rating column (upstream's `one_hot_encode`) and the style columns are shared."""
    n = len(b.outcomes)
    if n == 0:
        return {"score": None, "ci_low": None, "ci_high": None}  # nothing judged: no number, not NaN
    ids = np.zeros(n, dtype=int) if model_ids is None else np.asarray(model_ids, dtype=int)
    ratings = np.zeros((n, int(ids.max()) + 1))
    ratings[np.arange(n), ids] = 1.0  # rating of the model minus the baseline's (identified; upstream's is not)
    x = np.concatenate([ratings, style], axis=1)
    rng = np.random.RandomState(seed)
    idx = rng.randint(0, n, size=(rounds, n))  # upstream draws every round's indices at once
    rates = np.array([_sigmoid(fit_logistic(x[i], b.outcomes[i])[0]) for i in idx])
    return {"score": 100 * float(np.quantile(rates, 0.5)), "ci_low": 100 * float(np.quantile(rates, 0.05)),
            "ci_high": 100 * float(np.quantile(rates, 0.95))}


# ------------------------------------------------------------------------------------ answer features
_CODE_BLOCK = re.compile("```([^`]*)```")


def markdown_counts(answer: str) -> dict[str, dict[str, int]]:
    """`count_markdown_elements` after removing fenced code blocks (utils/add_markdown_info.py)."""
    for block in _CODE_BLOCK.findall(answer):
        answer = answer.replace(block, "")
    return {
        "header_count": {f"h{k}": len(re.findall(rf"^#{{{k}}}\s", answer, re.MULTILINE)) for k in range(1, 7)},
        "list_count": {"ordered": len(re.findall(r"^\s*\d+\.\s", answer, re.MULTILINE)),
                       "unordered": len(re.findall(r"^\s*[-*+]\s", answer, re.MULTILINE))},
        "bold_count": {"**": len(re.findall(r"\*\*[^*\n]+\*\*", answer)),
                       "__": len(re.findall(r"__[^_\n]+__", answer))},
    }


# The tokenizer each version's official answers were counted with: v0.1's gen_answer.py (2024) used
# tiktoken.encoding_for_model("gpt-3.5-turbo") = cl100k_base; v2.0's gen_answer.py uses "gpt-4o" = o200k_base.
OFFICIAL_ENCODING = {"v0.1": "cl100k_base", "v2.0": "o200k_base"}
APPROX_COUNTER = "approx:words+punctuation"
ANSWER_FILE_COUNTER = "arena-hard-auto answer file"  # token_len read from an official answer file


def _tiktoken_encoder(encoding: str) -> Any:
    return tiktoken_encoding(encoding)


def count_tokens(text: str, encoding: str = "o200k_base") -> tuple[int, str]:
    """(token count, counter): tiktoken `encoding` as upstream (offline, its BPE file from the `bpe-openai`
    package, verified: `tokens.py`), else a word/punctuation approximation that the counter names
    (`APPROX_COUNTER`)."""
    enc = _tiktoken_encoder(encoding)
    if enc is not None:
        return len(enc.encode(text, disallowed_special=())), f"tiktoken:{encoding}"
    return len(re.findall(r"\w+|[^\w\s]", text)), APPROX_COUNTER


def is_official_counter(counter: str | None, version: str) -> bool:
    return counter in (ANSWER_FILE_COUNTER, f"tiktoken:{OFFICIAL_ENCODING[version]}")


def answer_metadata(text: str, encoding: str = "o200k_base") -> dict[str, Any]:
    """Upstream's answer metadata (token_len + markdown counts) and which counter gave token_len."""
    tokens, counter = count_tokens(text, encoding)
    return {"token_len": tokens, **markdown_counts(text), "token_counter": counter}


# ------------------------------------------------------------------------------------------- metrics
def file_metadata(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metadata of an official answer file, marked as such (its token_len is upstream's own count)."""
    return None if meta is None else {**meta, "token_counter": ANSWER_FILE_COUNTER}


def score_rows(rows: list[dict[str, Any]], version: str, weight: int = 3, rounds: int = 100, seed: int = 42,
               style_control: bool = False, style_features: str = "both",
               pool: StylePool | None = None) -> ScoreResult:
    """Metrics (percentages) from rows {"id", "games": [{"score": label}, ...], "metadata"?}; `pool`: other
    models' games for a joint style-control fit."""
    battles = battles_v01(rows, weight) if version == "v0.1" else battles_v2(rows, weight)
    notes: list[str] = []
    if version == "v0.1":
        stats = score_v01(battles, rounds, seed)
        notes.append(f"v0.1: Bradley-Terry win rate vs baseline, bootstrap 95% CI ({rounds} rounds, seed {seed})")
    else:
        stats = score_v2(battles, rounds, seed)
        notes.append(f"v2.0: mean of bootstrap means, 90% CI ({rounds} rounds, seed {seed})")
    metrics: dict[str, float | int | None] = dict(stats)
    if style_control:
        own = battle_metadata(rows, battles.question_ids)
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
    if all(is_official_counter(c, version) for c in counters):
        return {"avg_tokens": mean}
    notes.append(f"avg_tokens_approx: answer tokens counted with {', '.join(counters)}, an approximation; "
                 f"arena-hard-auto {version} counts them with tiktoken {OFFICIAL_ENCODING[version]}, whose "
                 f"BPE file is neither in tiktoken's cache nor downloadable here; offline, {INSTALL_HINT}")
    return {"avg_tokens_approx": mean}


def _per_item(rows: list[dict[str, Any]], battles: Battles) -> list[dict[str, Any]]:
    sums: dict[Any, list[float]] = {}
    for qid, outcome in zip(battles.question_ids, battles.outcomes, strict=True):
        sums.setdefault(qid, []).append(float(outcome))
    return [{"id": r["id"], "score": (100 * sum(sums[r["id"]]) / len(sums[r["id"]])) if r["id"] in sums else None}
            for r in rows]


def _style_controlled(battles: Battles, own: tuple[list[Any], list[Any]], version: str, features: str,
                      rounds: int, seed: int, pool: StylePool | None) -> tuple[dict[str, float | None], str]:
    """The style-controlled score of this model (model 0) and the label saying how it was fitted."""
    outcomes, model_ids, style = joint_style_design(battles.outcomes, own, version, features, pool)
    joint = replace(battles, outcomes=outcomes)
    stats = (score_v01(joint, rounds, seed, style, model_ids) if version == "v0.1"
             else score_v2_style(joint, style, rounds, seed, model_ids))
    return stats, style_fit_label(features, pool)
