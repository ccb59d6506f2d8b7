"""The priced plan as text: one line per stage (with its peak memory), subtotals per kind, the total, the
stages that do not fit in memory (harness.estimate.memory_table) and the assumptions."""

from __future__ import annotations

from harness.estimate.memory_table import memory_cell, memory_lines
from harness.estimate.price import PlanEstimate, StageEstimate

KINDS = ("prompts", "samples", "signal", "trainset", "train", "answers", "judgements")
HEADER = f"  {'status':7s}  {'kind':10s}  {'stage':34s} {'generated':>10s} {'scored':>10s} {'trained':>10s} " \
         f"{'FLOPs':>9s} {'hours':>9s} {'memory GiB':>13s}"


def human(value: float) -> str:
    """1234 -> 1.23k, 5.6e9 -> 5.60G (tokens)."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.0f}"


def hours(value: float) -> str:
    return f"{value:.3g}" if value >= 0.01 else f"{value * 3600:.1f}s"


def _line(status: str, kind: str, label: str, generated: float, scored: float, trained: float, flops: float,
          hrs: float, memory: str = "") -> str:
    return (f"  {status:7s}  {kind:10s}  {label[:34]:34s} {human(generated):>10s} {human(scored):>10s} "
            f"{human(trained):>10s} {flops:9.2e} {hours(hrs):>9s} {memory:>13s}").rstrip()


def stage_line(s: StageEstimate) -> str:
    return _line("cached" if s.done else "to run", s.kind, s.label, s.generated, s.scored, s.trained, s.flops,
                 s.hours, memory_cell(s.memory))


def format_estimate(est: PlanEstimate) -> str:
    device = est.accelerator.device_word
    lines = [f"estimate on {est.accelerator.name} (tokens; FLOPs; {device}-hours incl. overheads; peak memory / "
             f"capacity, ! = does not fit)", HEADER]
    lines += [stage_line(s) for s in est.stages]
    lines.append("  by kind:")
    for kind in KINDS:
        if any(s.kind == kind for s in est.stages):
            lines.append(_line("", kind, f"({sum(s.kind == kind for s in est.stages)} stages)",
                               est.total("generated", kind), est.total("scored", kind), est.total("trained", kind),
                               est.total("flops", kind), est.total("hours", kind)))
    lines.append(_line("TOTAL", "", f"{len(est.stages)} stages", est.total("generated"), est.total("scored"),
                       est.total("trained"), est.total("flops"), est.total("hours")))
    pending = est.total("hours", pending_only=True)
    lines.append(f"  still to run: {hours(pending)} {device}-hours; judge API calls: {est.judge_calls}")
    lines += memory_lines(est.stages, est.accelerator.memory_bytes, device)
    notes = sorted({n for s in est.stages for n in s.work.notes if "not known" in n})
    lines += [f"  note: {n}" for n in notes]
    lines.append("  assumptions:")
    lines += [f"    - {a}" for a in est.assumptions]
    return "\n".join(lines)
