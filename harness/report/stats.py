"""Statistics for leaderboards: seed intervals, paired bootstraps over prompts, within-run noise.

Two sources of noise are kept apart on purpose:
- seed noise: how much a method's score moves when it is retrained with another seed (spread of the
  per-seed scores; a 95% Student-t interval over seeds);
- within-run (item/judge) noise: how much one run's score would move with another draw of prompts and
  judge verdicts (a bootstrap over the items of that single run).
A method can look better than another only because one run had a lucky judge; showing both lets a reader
see which of the two dominates.

Everything here is pure numpy, seeded, and deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (standard tables). A table instead of
# scipy because scipy is not a dependency of the package; beyond 30 the Cornish-Fisher expansion below
# is accurate to ~1e-4, far below anything a leaderboard prints.
_T975 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)
_Z975 = 1.959963984540054


def is_number(v: object) -> bool:
    """A finite real number: what a statistic can use (a bool is a flag, NaN or inf a failed measurement)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the multiplier of the standard error for a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a 95% t-interval; `low`/`high` are None with fewer than two seeds."""

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None  # sample standard deviation across seeds (ddof=1): the seed noise

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean


def mean_ci(values: Sequence[float], confidence_multiplier: float | None = None) -> Interval | None:
    """Mean and 95% Student-t interval over seeds; None when there is no value at all."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    n = len(vals)
    mean = float(np.mean(vals))
    if n < 2:
        return Interval(mean, None, None, n, None)
    sd = float(np.std(vals, ddof=1))
    t = confidence_multiplier if confidence_multiplier is not None else t_quantile_975(n - 1)
    half = t * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class PairedBootstrap:
    """Method minus baseline, paired over items. `p_value` is two-sided (see `paired_bootstrap`)."""

    diff: float  # observed mean(method) - mean(baseline), in per-item score units
    ci_low: float
    ci_high: float
    p_value: float
    n_items: int
    n_boot: int
    seed: int


def paired_bootstrap(
    method_scores: Sequence[float], baseline_scores: Sequence[float], n_boot: int = 10_000, seed: int = 0
) -> PairedBootstrap:
    """Paired bootstrap over items of the difference in mean score.

    Items are resampled with replacement, the same indices for both systems (that is the pairing: a
    hard prompt is hard for both). The p-value is TWO-SIDED and inverts the percentile interval:
    p = 2 * min(P*(d <= 0), P*(d >= 0)), with the +1 correction ((k + 1) / (B + 1)) so it is never 0,
    capped at 1. A clearly better method gets p ~ 2/(B+1); identical systems get p = 1.
    """
    a = np.asarray(method_scores, dtype=float)
    b = np.asarray(baseline_scores, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two equal-length vectors, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired bootstrap needs at least one item")
    d = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boot = d[idx].mean(axis=1)
    le = int(np.sum(boot <= 0))
    ge = int(np.sum(boot >= 0))
    p = min(1.0, 2 * min(le + 1, ge + 1) / (n_boot + 1))
    low, high = np.percentile(boot, [2.5, 97.5])
    return PairedBootstrap(float(d.mean()), float(low), float(high), p, int(d.size), n_boot, seed)


def item_bootstrap_se(scores: Sequence[float], n_boot: int = 2_000, seed: int = 0) -> float | None:
    """Within-run noise: bootstrap standard error of one run's mean item score (judge + prompt draw)."""
    x = np.asarray([s for s in scores if s is not None], dtype=float)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return float(np.std(boot, ddof=1))


def pooled_run_se(ses: Sequence[float | None]) -> float | None:
    """One within-run standard error for a row with several seeds: root-mean-square of the runs' SEs.

    RMS rather than mean because variances, not standard errors, average.
    """
    vals = [float(s) for s in ses if s is not None and math.isfinite(float(s))]
    if not vals:
        return None
    return math.sqrt(sum(v * v for v in vals) / len(vals))
