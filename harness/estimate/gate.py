"""Stop a run whose training will not fit in this device's memory, before any work is done.

The estimate is the dry run's (harness.estimate.memory_plan) for the train stages still to run (cached ones
are done), against what this process's device holds: a CUDA GPU's total memory, else the machine's RAM.
Under `accelerate launch` with FSDP or DeepSpeed ZeRO-3 the trained state is split over the processes;
DDP and ZeRO-1/2 are priced as full replicas (an upper bound for ZeRO-1/2). `pad-harness run
--ignore-memory-plan` (api.run(..., ignore_memory_plan=True)) goes on anyway: the estimate is an upper bound
(every sequence at its longest).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from harness.errors import HarnessError


def device_capacity_bytes() -> tuple[float, bool]:
    """(bytes the training device holds, whether it is a GPU): CUDA device 0's total memory, else the RAM."""
    import torch

    if torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(0).total_memory), True
    import psutil

    return float(psutil.virtual_memory().total), False


def training_shards(world_size: int) -> int:
    """Processes the trained state is split over under this launch (accelerate's environment)."""
    from accelerate.utils import parse_flag_from_env  # how accelerate itself reads its launch flags

    fsdp = parse_flag_from_env("ACCELERATE_USE_FSDP")
    zero3 = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    return world_size if (fsdp or zero3) else 1


def pending_training_memory(plan: Any, ctx: Any, capacity: float, on_gpu: bool) -> list[tuple[Any, Any]]:
    """(step, StageMemory) of every train stage of `plan` still to run."""
    from harness.estimate.lengths import Lengths
    from harness.estimate.memory_plan import MemoryPlan, Setup
    from harness.estimate.shapes import shape_of
    from harness.estimate.work import Shapes

    exp = ctx.exp
    if not any(step.kind == "train" and not step.done for step in plan.steps):
        return []
    shapes = Shapes(exp, Lengths(exp), shape_of(exp.student), shape_of(exp.teacher))
    planner = MemoryPlan(shapes, Setup.of(exp, on_gpu, training_shards(ctx.processes.world_size)), capacity)
    out = []
    for step in plan.steps:
        if step.kind == "train" and not step.done:
            memory = planner.stage(step)
            if memory is not None:
                out.append((step, memory))
        else:
            planner.advance(step)
    return out


def check_memory_plan(plan: Any, ctx: Any) -> None:
    """Raise one message naming the first train stage that will not fit, its estimate and its levers."""
    from harness.estimate.memory_table import does_not_fit, levers_text

    capacity, on_gpu = device_capacity_bytes()
    try:
        priced = pending_training_memory(plan, ctx, capacity, on_gpu)
    except Exception as exc:  # noqa: BLE001 - a plan the estimator cannot price (a shape unknown offline) still runs
        print(f"pad-harness: memory plan not priced ({str(exc).splitlines()[0][:200]}); training goes on unchecked",
              file=sys.stderr)
        return
    over = [(step, memory) for step, memory in priced if not memory.fits]
    if not over:
        return
    step, memory = over[0]
    more = f" (and {len(over) - 1} more train stage(s))" if len(over) > 1 else ""
    raise HarnessError(f"memory plan: {does_not_fit('train', step.label, memory, 'GPU' if on_gpu else 'machine')}"
                       f"{more}; to fit: {levers_text(memory)}; or run anyway with --ignore-memory-plan "
                       f"(the estimate is an upper bound: `pad-harness run FILE --dry-run --estimate-on ...`)")
