"""What the trainer asks of accelerate: how many processes the launch has, the Accelerator, batches on the
device, and numbers summed over the processes.

`accelerate` handles device placement, mixed precision (bf16 autocast on GPU, fp32 on CPU) and, under
`accelerate launch`, DDP / FSDP / DeepSpeed (see docs/multi-gpu.md).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.config import Budget
from harness.errors import BudgetError
from harness.training.precision import allow_precision, resolve_mixed_precision


def launch_processes() -> int:
    """The number of processes of this launch (1 outside a launcher)."""
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # Data-parallel on CPUs (torchrun with ACCELERATE_USE_CPU=1, gloo): the first state made decides, and
    # without cpu=True accelerate ignores torchrun's environment and runs every process alone.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).num_processes


def make_accelerator(budget: Budget, accumulation_steps: int = 1, load_dtype: torch.dtype | None = None) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, GradientAccumulationPlugin

    precision = resolve_mixed_precision(budget.mixed_precision, load_dtype)
    allow_precision(precision)
    # An explicit plugin: the budget decides accumulation, not an ACCELERATE_* environment variable, and
    # there is no prepared dataloader whose end should force a sync.
    plugin = GradientAccumulationPlugin(num_steps=accumulation_steps, sync_with_dataloader=False)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_plugin=plugin)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and (
        accelerator.gradient_accumulation_steps != accumulation_steps
    ):
        raise BudgetError(
            f"the DeepSpeed config accumulates {accelerator.gradient_accumulation_steps} micro-batches but the "
            f"budget needs {accumulation_steps} (effective_batch / (micro_batch x processes)); set "
            f"deepspeed_config.gradient_accumulation_steps: {accumulation_steps} in the accelerate config"
        )
    return accelerator


def is_sharded(accelerator: Any) -> bool:
    """Whether the optimizer state is split across processes (FSDP, DeepSpeed): then one process's
    state_dict() is not the whole of it."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if hasattr(obj, "to") and not isinstance(obj, (str, torch.nn.Module)):
        return obj.to(device)  # e.g. harness.methods.common.Packed
    return obj


def reduce_sums(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    """Sum per-process numbers over processes (a no-op in a single process)."""
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    tensor = accelerator.reduce(tensor, reduction="sum")
    return dict(zip(keys, tensor.tolist(), strict=True))
