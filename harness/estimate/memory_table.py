"""The memory side of an estimate as text: a column per stage, the stages that do not fit and their levers."""

from __future__ import annotations

from typing import Any

from harness.estimate.memory import GiB
from harness.estimate.memory_plan import StageMemory


def gib(value: float) -> str:
    return f"{value / GiB:.3g}"


def memory_cell(memory: StageMemory | None) -> str:
    """`peak/limit GiB`, `!` when it does not fit; a vLLM stage's limit is its engine's share."""
    if memory is None:
        return "-"
    flag = "" if memory.fits else " !"
    return f"{gib(memory.memory.total)}/{gib(memory.limit)}{flag}"


def parts_text(memory: StageMemory, top: int = 6) -> str:
    parts = sorted(memory.memory.parts, key=lambda p: -p[1])
    shown = ", ".join(f"{name} {gib(size)}" for name, size in parts[:top] if size > 0)
    return shown + (", ..." if len(parts) > top else "")


def does_not_fit(kind: str, label: str, memory: StageMemory, device: str) -> str:
    """One line: the stage, its peak against what it must fit in, and what it is made of."""
    where = (f"its vLLM engine's share ({gib(memory.limit)} GiB of {gib(memory.capacity)} GiB)"
             if memory.memory.share is not None else f"{gib(memory.capacity)} GiB per {device}")
    return f"{kind} {label}: needs {gib(memory.memory.total)} GiB > {where} ({parts_text(memory)} GiB)"


def levers_text(memory: StageMemory) -> str:
    if not memory.levers:
        return "no single setting brings it under; use a larger device"
    return "; ".join(f"{what} -> {gib(size)} GiB" for what, size in memory.levers)


def memory_lines(stages: list[Any], capacity: float, device: str) -> list[str]:
    """The memory summary under the estimate table (stages: StageEstimate-like, with .memory)."""
    priced = [s for s in stages if s.memory is not None]
    if not priced:
        return []
    pending = [s for s in priced if not s.done] or priced
    largest = max(pending, key=lambda s: s.memory.memory.total)
    lines = [f"  memory (peak per stage, GiB; harness/estimate/memory.py): capacity {gib(capacity)} GiB per {device}; "
             f"largest to run: {largest.kind} {largest.label} {gib(largest.memory.memory.total)} GiB"]
    groups: dict[tuple[str, float], list[Any]] = {}
    for s in priced:
        if not s.memory.fits:
            groups.setdefault((s.kind, round(s.memory.memory.total)), []).append(s)
    for members in groups.values():
        first = members[0]
        label = first.label + (f" (and {len(members) - 1} more alike)" if len(members) > 1 else "")
        lines.append("  DOES NOT FIT " + does_not_fit(first.kind, label, first.memory, device))
        lines += [f"      {what} -> {gib(size)} GiB" for what, size in first.memory.levers]
        if not first.memory.levers:
            lines.append("      " + levers_text(first.memory))
    if any(s.memory.memory.share is not None for s in priced):
        share = next(s.memory for s in priced if s.memory.memory.share is not None)
        lines.append(f"  note: a vLLM engine reserves gpu_memory_utilization x capacity ({gib(share.limit)} GiB) by "
                     f"design, whatever it needs; its column shows weights + the KV cache of one max_model_len "
                     f"sequence, which must fit in that share")
    return lines
