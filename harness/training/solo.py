"""One process training alone inside a multi-process launch: a tuning trial (trial i on process i mod N).

accelerate keeps one process-wide state; once a launch has made it multi-process, every `Accelerator` of the
process joins the launch's collectives, so a process cannot train a model of its own through it. Trials of
students that fit one device are better run side by side (each process its own trial) than data-parallel
one after another. `SoloAccelerator` is the part of the `Accelerator` API the trainer uses, for a single
process on its own device, doing exactly what accelerate does there: the loss divided by the accumulation
steps, optimizer steps and zeroing only at the synchronising micro-batch, autocast as accelerate sets it up,
and the plain `clip_grad_norm_`. A trial trained alone therefore stores the bytes a single-process run
stores (tested: tests/test_tuning_launch.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from harness.errors import BudgetError
from harness.training.precision import resolve_mixed_precision


class _SyncedOptimizer:
    """The optimizer as accelerate wraps it: `step` and `zero_grad` act only when gradients synchronise."""

    def __init__(self, optimizer: torch.optim.Optimizer, accelerator: SoloAccelerator) -> None:
        self.optimizer, self.accelerator = optimizer, accelerator

    def step(self) -> None:
        if self.accelerator.sync_gradients:
            self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.accelerator.sync_gradients:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


class SoloAccelerator:
    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, mixed_precision: str, accumulation_steps: int, load_dtype: torch.dtype | None) -> None:
        from accelerate.utils import DistributedType

        self.distributed_type = DistributedType.NO
        self.precision = resolve_mixed_precision(mixed_precision, load_dtype)
        if self.precision == "fp16":
            raise BudgetError("budget.mixed_precision fp16: a tuning trial trained alone in a launch needs a loss "
                              "scaler this path does not have; use bf16 (or run the trials in one process)")
        self.gradient_accumulation_steps = accumulation_steps
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
        self._micro = 0
        self.sync_gradients = True

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        return model.to(self.device), _SyncedOptimizer(optimizer, self)

    @contextmanager
    def accumulate(self, model: torch.nn.Module) -> Iterator[None]:
        self._micro += 1
        self.sync_gradients = self._micro % self.gradient_accumulation_steps == 0
        yield

    def autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.gradient_accumulation_steps).backward()

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor

    def unwrap_model(self, model: Any) -> Any:
        return model

    def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def wait_for_everyone(self) -> None:
        pass
