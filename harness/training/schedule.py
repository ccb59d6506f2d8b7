"""Learning-rate schedule: linear warmup, then cosine / linear decay to zero, or constant.

The schedule is a pure function of the optimizer step, so a resumed run needs no scheduler state beyond
the step counter, and tests can check hand-computed values. Conventions follow `transformers`'
`get_*_schedule_with_warmup` (the LR of step 0 is 0 when there is warmup), so numbers are comparable.
"""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base LR used by optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {kind!r}; use cosine, linear or constant")


def learning_rate(step: int, total_steps: int, base_lr: float, warmup_ratio: float, kind: str) -> float:
    return base_lr * lr_multiplier(step, total_steps, warmup_steps_for(total_steps, warmup_ratio), kind)
