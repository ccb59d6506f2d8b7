"""Which copy of a model holds the accelerator: while vLLM serves a model from its own weights, the run's
transformers copies (the base teacher and student the pipeline keeps for scoring and training) wait in
host memory, and go back to their device the next time they are used.

A model marked `offload` (ModelSpec) is parked whenever the pool hands out another model's weights, so a
teacher that does not fit beside the student waits in host memory while the student trains. On a
CPU-only run there is nothing to move (host memory is where they already are).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.models import quantize
from harness.models.base import LoadedModel


def _is_accelerator(device: Any) -> bool:
    return torch.device(device).type not in ("cpu", "meta")


def park(loaded: LoadedModel) -> bool:
    """Move `loaded`'s weights to host memory if they sit on an accelerator; True if moved."""
    if not _is_accelerator(loaded.device) or loaded.parked or getattr(loaded.model, "hf_device_map", None):
        return False  # on the host already, or dispatched over devices by accelerate (its hooks place it)
    if quantize.places_itself(quantize.library_of(loaded.model)):
        return False  # bitsandbytes weights stay where they were quantized (`offload` is refused for them)
    loaded.model.to("cpu")
    loaded.parked = True
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True


def unpark(loaded: LoadedModel) -> LoadedModel:
    """Bring a parked model back to its device (no-op otherwise)."""
    if loaded.parked:
        loaded.model.to(loaded.device)
        loaded.parked = False
    return loaded
