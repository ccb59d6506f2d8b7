"""How the student's numbers are kept while it trains: fp32 master weights, the autocast precision, no dropout.

Master weights are fp32 whatever dtype the student was loaded in: AdamW updating bf16 weights rounds
small updates away (at lr 8e-7 about 1% of the elements of a bf16 model move per step). A bf16 student is
upcast before training and trained under bf16 autocast (`mixed_precision: auto` follows the load dtype),
and the trained student is stored in fp32. Dropout is off while training (as TRL and the released PAD
run do): the losses compare log-likelihoods of several responses, which dropout noise would perturb.
"""

from __future__ import annotations

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
