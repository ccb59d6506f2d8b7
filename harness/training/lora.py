"""LoRA students (`student.lora`): peft adapters trained on a frozen base, stored merged.

Why these choices:
- The base stays frozen in the dtype it was loaded in (bf16 on a GPU; int8/nf4 when `student.quantization`
  asks for QLoRA): its memory is what LoRA saves. The adapters are fp32 (peft's `autocast_adapter_dtype`),
  so AdamW holds fp32 moments for them alone, the same master-weight rule as full fine-tuning
  (harness.training.precision).
- A = Kaiming-uniform, B = 0 (peft's default): the initial student IS the base, so the cached DPO reference
  (the initial student's log-probs, harness.signals.policy) is the base model's, as TRL computes it with
  the adapters disabled, and no second copy is held.
- Stored: the merged model, W + B A alpha/r computed in fp32 (a complete model directory that every backend
  loads, harness.interop.model_dir), and the adapter beside it in `adapter/` (peft's own format). A
  quantized base is merged into an unquantized copy of the base (merging into 4-bit weights would round).
- Checkpoints keep the adapters and their optimizer moments only: the frozen base is the student's own
  weights, loaded again on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.config import LoraSpec
from harness.errors import HarnessError

ADAPTER_DIR = "adapter"  # beside the merged weights in a train artifact


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise HarnessError("student.lora needs peft: pip install 'pad-harness[lora]' (or pip install peft)") from None
    return peft


def lora_config(spec: LoraSpec) -> Any:
    targets: Any = spec.target_modules if isinstance(spec.target_modules, str) else list(spec.target_modules)
    return _peft().LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                              bias="none", task_type="CAUSAL_LM")


def attach_lora(model: torch.nn.Module, spec: LoraSpec) -> torch.nn.Module:
    """`model` wrapped with fresh adapters (initialised from torch's global RNG: seed it first); only the
    adapters require grad. The base keeps its dtype; the adapters are fp32."""
    try:
        wrapped = _peft().get_peft_model(model, lora_config(spec), autocast_adapter_dtype=True)
    except ValueError as exc:  # e.g. target_modules naming no module of this model
        raise HarnessError(f"student.lora: {exc}") from None
    for param in wrapped.parameters():
        if param.requires_grad and param.is_floating_point():
            param.data = param.data.float()
    return wrapped


def is_lora(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters' entries of a peft model's state dict (what a LoRA checkpoint keeps)."""
    return {k: v for k, v in state.items() if ".lora_" in k}


def load_adapter_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put checkpointed adapter weights back; every one must land, and nothing but adapters may be given."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or missing or not state:
        raise HarnessError(f"a LoRA checkpoint does not fit this student's adapters (unexpected "
                           f"{result.unexpected_keys[:3]}, missing {missing[:3]}); delete the checkpoints to "
                           f"start over")


def _quantized(module: torch.nn.Module) -> bool:
    """Weights held in a quantized form (torchao tensor subclasses, bitsandbytes' Int8Params/Params4bit)."""
    return any(type(p) not in (torch.nn.Parameter, torch.Tensor) or not p.is_floating_point()
               for p in module.parameters())


def merged_model(model: Any, base_loader: Callable[[], torch.nn.Module] | None = None) -> torch.nn.Module:
    """The plain transformers model W + B A alpha/r, in fp32, from a trained peft `model`. `model` itself is
    consumed (its base becomes the merged model) unless its base is quantized: then the trained adapters
    are put on `base_loader()`, an unquantized copy of the same base, and merged there."""
    peft = _peft()
    base = model.get_base_model()
    if _quantized(base):
        if base_loader is None:
            raise HarnessError("a quantized LoRA base needs an unquantized copy of the base to merge into")
        fresh = base_loader().float()
        target = peft.get_peft_model(fresh, model.peft_config["default"])
        load_adapter_state(target, adapter_state(model.state_dict()))
        model = target
    model.float()  # base and adapters in fp32: the merge adds B A alpha/r without rounding to bf16
    return model.merge_and_unload()


def save_adapter(model: Any, out_dir: Path, base_name: str) -> Path:
    """peft's own adapter files (adapter_config.json, adapter_model.safetensors) in out_dir/adapter, naming
    the base by its model id (not a path on this machine)."""
    target = Path(out_dir) / ADAPTER_DIR
    config = model.peft_config["default"]
    local = config.base_model_name_or_path
    config.base_model_name_or_path = base_name
    try:
        model.save_pretrained(str(target), save_embedding_layers=False)
    finally:
        config.base_model_name_or_path = local
    readme = target / "README.md"  # peft's model-card stub; the artifact's own card is the harness's
    if readme.exists():
        readme.unlink()
    return target


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapted weight replaced by W + B A alpha/r, under the base
    model's own names, WITHOUT touching `model` (merging in place and back would not restore W bit for bit).
    What an engine that follows the trained weights loads (GKD's vLLM sampler, harness.models.vllm_policy)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            with torch.no_grad():
                weight = module.get_base_layer().weight
                delta = module.get_delta_weight("default")  # type: ignore[attr-defined]  # on every concrete layer
                deltas[f"{name}.weight"] = weight + delta.to(weight.dtype)
    state = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        state[plain] = deltas.get(plain, value)
    return state
