"""How the student's numbers are kept while it trains: fp32 master weights, the autocast precision, no dropout.

Master weights are fp32 whatever dtype the student was loaded in: AdamW updating bf16 weights rounds
small updates away (at lr 8e-7 about 1% of the elements of a bf16 model move per step). A bf16 student is
upcast before training and trained under bf16 autocast (`mixed_precision: auto` follows the load dtype),
and the trained student is stored in fp32. Dropout is off while training (as TRL and the released PAD
run do): the losses compare log-likelihoods of several responses, which dropout noise would perturb.
`PolicyPrecision` names that path (weights dtype, autocast) so the initial student can be scored in it
(DPO's reference, harness.signals.policy).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def resolve_mixed_precision(setting: str, load_dtype: torch.dtype | None = None) -> str:
    """`auto`: bf16 autocast on a GPU that supports it, and wherever the student was loaded in bf16
    (it asked for bf16 compute; its master weights are fp32 either way); fp32 otherwise."""
    if setting != "auto":
        return setting
    if load_dtype == torch.bfloat16:
        return "bf16"
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def allow_precision(precision: str) -> None:
    """accelerate keeps one process-wide AcceleratorState and refuses an Accelerator with another mixed
    precision; one process may train a bf16 student after an fp32 one (tests, notebooks), so the old
    state is dropped (its process group, in `PartialState`, is kept)."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision) and "deepspeed_plugin" not in state:
        AcceleratorState._reset_state(reset_partial_state=False)


def fp32_master_weights(model: torch.nn.Module) -> torch.dtype | None:
    """Upcast every floating parameter and buffer to fp32 in place; return the dtype it was loaded in
    (the first floating parameter's), so autocast can follow it."""
    load_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in [*model.parameters(), *model.buffers()]):
        model.float()
    return load_dtype


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off in training mode: `nn.Dropout` modules (TRL's `disable_dropout_in_model`) and the
    attention dropout that transformers applies functionally from a module attribute."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0  # type: ignore[assignment]


_DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MIXED = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PolicyPrecision:
    """How the trainer will run the student's forward pass: the dtype its module weights are in and the
    autocast dtype (None: no autocast). Scoring the initial student the same way makes DPO's cached
    reference the policy's own step-0 log-probs (not those of the bf16 student as loaded)."""

    weights: torch.dtype
    autocast: torch.dtype | None

    def key(self) -> dict[str, str | None]:
        """For cache keys: what changes the scores' low bits."""
        name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
        return {"weights": name(self.weights), "autocast": None if self.autocast is None else name(self.autocast)}


def policy_precision(setting: str, load_dtype: torch.dtype | str | None, lora: bool = False) -> PolicyPrecision:
    """The trainer's precision path for `budget.mixed_precision` and the student's load dtype, under this
    launch. Plain and DDP training (harness.training.distributed): fp32 master weights under the autocast
    `resolve_mixed_precision` picks. accelerate runs a DeepSpeed bf16/fp16 engine without autocast on module
    weights cast to that dtype, and FSDP's mixed-precision policy casts the parameters to it and autocasts
    too (both from accelerate's source; neither launch is tested here). A LoRA student's base is not upcast
    (harness.training.lora): its weights stay in the load dtype."""
    if isinstance(load_dtype, str):
        load_dtype = _DTYPE_NAMES.get(load_dtype)
    mixed = _MIXED.get(resolve_mixed_precision(setting, load_dtype))
    if lora:
        return PolicyPrecision(load_dtype or torch.float32, mixed)
    if mixed is None:
        return PolicyPrecision(torch.float32, None)
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        return PolicyPrecision(mixed, None)
    if parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return PolicyPrecision(mixed, mixed)
    return PolicyPrecision(torch.float32, mixed)


@contextmanager
def in_policy_precision(model: torch.nn.Module, precision: PolicyPrecision) -> Iterator[None]:
    """Run `model` as the trainer will (`PolicyPrecision`) inside the block: its floating parameters and
    buffers cast in place (no second copy of the weights), autocast on; afterwards every tensor gets its own
    dtype back. bf16 -> fp32 -> bf16 is exact, so the loaded model is unchanged when the block ends."""
    everything = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    device = next((t.device for t in everything), torch.device("cpu"))
    # Only what is not already in the weights dtype is cast (a LoRA student's frozen base, maybe quantized, is not).
    tensors = [t for t in everything if t.dtype != precision.weights]
    # A cast to fp32 is undone exactly; any other (fp32 -> bf16 for DeepSpeed) keeps the original tensors.
    originals = [None if precision.weights == torch.float32 else t.data for t in tensors]
    before = [t.dtype for t in tensors]
    try:
        for t in tensors:
            t.data = t.data.to(precision.weights)
        if precision.autocast is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=precision.autocast):
                yield
    finally:
        for t, dtype, original in zip(tensors, before, originals, strict=True):
            t.data = original if original is not None else t.data.to(dtype)
