"""What a run prints as it goes: the plan in one line, then one line per stage with an ETA.

    plan: 47 stages, 12 cached, 35 to run (train 9, answers 13, judgements 13); estimated 6m20s on cpu
    [ 1/35] train pad-seed0 done in 12s · ETA 5m58s

The ETA is the estimator's (harness.estimate, the same prices `--dry-run --estimate-on` gives) for the
stages still to run, scaled by how the finished stages' measured times compared with their estimates:
the estimator's absolute MFU assumptions may be off on a given machine, the ratio between stages much less.
When the plan cannot be priced (a model whose shape is unknown offline), the lines carry no ETA.
Lines go to stderr with the progress bars; `--quiet` prints none.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from harness.console import bars_enabled


def local_accelerator() -> str:
    """The estimator's name for the device this process runs on."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    return next((acc for acc in ("h100", "a800", "a100") if acc in name), "h100")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RunProgress:
    """Built from the plan before it runs; `stage_done(step, seconds)` after each computed step."""

    def __init__(self, steps: list[Any], estimates: dict[str, float] | None, device: str) -> None:
        self.pending = [s for s in steps if not s.done]
        self.estimates = estimates or {}  # artifact key -> estimated seconds
        self.device = device
        self.done = 0
        self.measured = 0.0  # seconds the finished steps took
        self.estimated_done = 0.0  # what the estimator said they would take
        self.remaining = sum(self.estimates.get(s.artifact.key, 0.0) for s in self.pending)
        self.started = time.time()

    def summary(self, steps: list[Any]) -> str:
        kinds = Counter(s.kind for s in self.pending)
        todo = ", ".join(f"{kind} {count}" for kind, count in kinds.items())
        line = (f"plan: {len(steps)} stages, {len(steps) - len(self.pending)} cached, {len(self.pending)} to run"
                + (f" ({todo})" if todo else ""))
        if self.estimates and self.pending:
            line += f"; estimated {_duration(self.remaining)} on {self.device}"
        return line

    def eta(self) -> float | None:
        """Seconds left: the estimates of the steps to run, scaled by measured/estimated so far."""
        if not self.estimates:
            return None
        scale = self.measured / self.estimated_done if self.estimated_done > 0 else 1.0
        return self.remaining * scale

    def stage_done(self, step: Any, seconds: float) -> str:
        self.done += 1
        estimate = self.estimates.get(step.artifact.key, 0.0)
        self.remaining = max(0.0, self.remaining - estimate)
        if estimate > 0:
            self.measured += seconds
            self.estimated_done += estimate
        width = len(str(len(self.pending)))
        line = f"[{self.done:>{width}}/{len(self.pending)}] {step.kind} {step.label} done in {_duration(seconds)}"
        left = self.eta()
        if left is not None and self.done < len(self.pending):
            line += f" · ETA {_duration(left)}"
        return line


def plan_estimates(plan: Any, ctx: Any, device: str) -> dict[str, float] | None:
    """Estimated seconds per step of `plan` on `device`, or None when the plan cannot be priced here."""
    from harness.estimate import estimate_plan

    try:
        priced = estimate_plan(plan, ctx, device)
    except Exception:  # noqa: BLE001 - an ETA is a courtesy: a plan the estimator cannot price still runs
        return None
    by_label = {(s.kind, s.label): s.seconds for s in priced.stages}
    return {step.artifact.key: by_label.get((step.kind, step.label), 0.0) for step in plan.steps}


def say(line: str) -> None:
    """One progress line on stderr (not when the run is quiet)."""
    if bars_enabled():
        print(line, file=sys.stderr, flush=True)
