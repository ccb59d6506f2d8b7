"""What each optimizer step records: its work in the run's `Accounting` and its row in the metrics log.

Every method is accounted the same way, from the tokens its `collate()` says the student processes
(`batch['student_tokens']`), summed over the processes of a launch before they are recorded.
"""

from __future__ import annotations

import time
from typing import Any

from harness.errors import HarnessError
from harness.methods.base import Method, TrainContext
from harness.training.accounting import Accounting, count_params

# A method metric with one of these names is logged as method_<name>: the trainer's own columns win.
RESERVED_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_total", "prompts_seen", "time_s",
                 "wall_s", "tokens_per_s"}


def student_tokens(method: Method, batch: dict[str, Any]) -> int:
    if "student_tokens" not in batch:
        raise HarnessError(f"method {method.name!r}: collate() must set batch['student_tokens'] (the tokens the "
                           f"student processes) so that every method is accounted the same way")
    return int(batch["student_tokens"])


def counting_loader(loader: Any, ctx: TrainContext) -> Any:
    """Wrap the lazy teacher loader so that an on-policy run learns the teacher's size for its FLOPs.
    It closes over the context, not the Trainer, so a finished run's optimizer is freed at once."""
    if loader is None:
        return None

    def load() -> Any:
        teacher = loader()
        ctx.accounting.teacher_params = count_params(teacher.model)
        return teacher

    return load


def record_step(accounting: Accounting, totals: dict[str, float], micro_batches: int, step_time: float,
                accelerator: Any) -> None:
    """Add one optimizer step, from `totals` summed over the processes, to the run's accounting."""
    accounting.add_student_train(int(totals["tokens"]))
    accounting.optimizer_steps += 1
    accounting.micro_batches += micro_batches * accelerator.num_processes
    accounting.prompts_seen += int(totals["examples"])
    accounting.train_time_s += step_time
    accounting.update_peak_memory(accelerator.device)


def step_row(step: int, lr: float, grad_norm: float, totals: dict[str, float], step_time: float,
             accounting: Accounting, steps_per_epoch: int, started: float) -> dict[str, Any]:
    """The metrics row of optimizer step `step` (0-based), after `record_step`; `started` is when this
    call began (perf_counter), so wall_s does not span resumes."""
    step_tokens = int(totals["tokens"])
    row: dict[str, Any] = {
        "step": step + 1,
        "epoch": round((step + 1) / steps_per_epoch, 6),
        "loss": totals["loss"] / totals["examples"],
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": step_tokens,
        "tokens_total": accounting.student_backward_tokens,
        "prompts_seen": accounting.prompts_seen,
        "time_s": round(accounting.train_time_s, 6),
        "wall_s": round(time.perf_counter() - started, 6),
        "tokens_per_s": step_tokens / step_time if step_time > 0 else None,
    }
    for key, value in totals.items():
        if key.startswith("m:"):
            name = key[2:]
            row[name if name not in RESERVED_KEYS else f"method_{name}"] = value / totals["examples"]
    return row
