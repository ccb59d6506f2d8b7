"""Between the Trainer and its checkpoints: what a checkpoint must match to be resumed, reading one back,
what carries over from it, and the trainer's part of a checkpoint written.

A resumed run is bitwise the run that was not interrupted (tests/test_trainer.py): its weights, optimizer
state, RNG, log rows and accounting all continue from the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import harness.training.checkpoint as ckpt
from harness.config import Budget
from harness.diskspace import require_free
from harness.errors import HarnessError
from harness.methods.base import Method, PromptGroup
from harness.store import hash_inputs
from harness.training.accounting import Accounting
from harness.training.budget import TrainPlan


def run_fingerprint(method: Method, groups: list[PromptGroup], budget: Budget, seed: int, processes: int) -> str:
    """What a checkpoint must match to be resumed (how checkpoints are stored may change between calls)."""
    params = method.params.model_dump(mode="json") if hasattr(method.params, "model_dump") else {}
    return hash_inputs({"method": method.name, "params": params, "seed": seed, "processes": processes,
                        "budget": budget.result_inputs(),
                        "prompts": [g.prompt_id for g in groups]})


def read_checkpoint(work_dir: Path, fingerprint: str, model: torch.nn.Module,
                    load: Callable[[torch.nn.Module, dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """The latest checkpoint in work_dir (None if there is none), its weights already loaded into `model`
    (by `load`, when a checkpoint holds part of the weights: a LoRA run's adapters)."""
    ckpt.clean_partial(work_dir)
    latest = ckpt.latest_checkpoint(work_dir)
    if latest is None:
        return None
    saved = ckpt.load_checkpoint(latest)
    if saved["trainer"]["fingerprint"] != fingerprint:
        raise HarnessError(f"checkpoint {latest} belongs to a different run (method, budget, seed or "
                           f"prompts changed); delete {ckpt.checkpoint_root(work_dir)} to start over")
    if load is not None:
        load(model, saved["model"])
    else:
        model.load_state_dict(saved["model"])  # before prepare: sharding wrappers see the restored weights
    return saved


def require_room(work_dir: Path, model: torch.nn.Module, budget: Budget, steps_left: int, method_name: str) -> None:
    """Fail before training, not after it, if its outputs cannot be written."""
    needed, at_once = ckpt.bytes_needed(model, budget.checkpoint_every, steps_left)
    require_free(work_dir, needed, f"training {method_name!r} (the trained model and "
                                   f"{at_once} checkpoint(s) of weights + optimizer state)")


def resumed_accounting(saved: dict[str, Any], current: Accounting) -> Accounting:
    """The checkpoint's accounting, carried on by the resumed run."""
    previous = Accounting.from_dict(saved["trainer"]["accounting"])
    # Counters continue from the checkpoint; this process's device facts win.
    for name in ("device_name", "num_processes", "peak_flops_per_device", "peak_memory_kind", "extra"):
        setattr(previous, name, getattr(current, name))
    return previous


def trainer_state(fingerprint: str, rows: list[dict[str, Any]], accounting: Accounting, plan: TrainPlan,
                  started: float) -> dict[str, Any]:
    """The trainer's part of a checkpoint; `started` is when this call began (perf_counter)."""
    snapshot = accounting.to_dict()
    snapshot["wall_time_s"] += time.perf_counter() - started  # this call's time so far counts too
    return {"fingerprint": fingerprint, "log_rows": rows, "accounting": snapshot, "plan": plan.to_dict()}
