"""What a plan will cost before it runs: tokens, FLOPs, accelerator hours and peak memory per stage.

`pad-harness run FILE --dry-run --estimate-on a800` prints it (harness/cli.py). The pieces: `shapes` (model
sizes without weights), `lengths` (token lengths from configs and the data at hand), `work` (what each
stage computes), `hardware` (peaks, assumed utilisation, memory), `price` (the estimate), `memory` (peak
memory formulas), `memory_plan` (per stage, with the levers that would make it fit), `gate` (a run stops
before a train stage that will not fit), `table` and `memory_table` (the text), `validate` (estimate vs a
finished run's measured stages). docs/performance.md has the validation.
"""

from __future__ import annotations

from harness.estimate.hardware import ACCELERATORS, Accelerator, accelerator
from harness.estimate.price import PlanEstimate, StageEstimate, estimate_plan
from harness.estimate.table import format_estimate

__all__ = ["ACCELERATORS", "Accelerator", "PlanEstimate", "StageEstimate", "accelerator", "estimate_plan",
           "format_estimate"]
