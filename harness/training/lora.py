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
  quantized base (QLoRA) is dequantized, W being what the adapters trained on, and stored unquantized
  (merging into 4-bit weights would round B A away).
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


def _quantized_tensor(tensor: torch.Tensor) -> bool:
    """Held in a quantized form: a torchao tensor subclass, bitsandbytes' Int8Params/Params4bit, int storage."""
    data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
    return (type(data) is not torch.Tensor or type(tensor).__name__ in ("Params4bit", "Int8Params")
            or not tensor.is_floating_point())


def _quantized(module: torch.nn.Module) -> bool:
    return any(_quantized_tensor(p) for p in module.parameters())


def merged_model(model: Any, base_loader: Callable[[], torch.nn.Module] | None = None) -> torch.nn.Module:
    """The plain transformers model W + B A alpha/r, in fp32, from a trained peft `model`. `model` itself is
    consumed (its base becomes the merged model) unless its base is quantized: then W is the base's
    dequantized weights (what the adapters were trained on), and the merged weights go into `base_loader()`,
    an unquantized copy of the same architecture (merging into 4-bit weights would round B A away)."""
    base = model.get_base_model()
    if not _quantized(base):
        model.float()  # base and adapters in fp32: the merge adds B A alpha/r without rounding to bf16
        return model.merge_and_unload()
    if base_loader is None:
        raise HarnessError("a quantized LoRA base needs an unquantized copy of the base to merge into")
    target = base_loader().float()
    wanted = target.state_dict()
    merged = {k: v.float() for k, v in merged_state_dict(model).items() if k in wanted}
    from harness.training.checkpoint import load_weights_allowing_ties

    _, missing = load_weights_allowing_ties(target, merged)
    if missing:
        raise HarnessError(f"merging the LoRA student: the base copy has weights the trained model lacks: {missing[:3]}")
    return target


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
    from peft.utils.integrations import dequantize_module_weight

    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, LoraLayer) and isinstance(weight, torch.Tensor) and _quantized_tensor(weight):
            with torch.no_grad():  # a quantized layer without adapters: its dequantized weights
                deltas[f"{name}.weight"] = dequantize_module_weight(module)
        if isinstance(module, LoraLayer):
            with torch.no_grad():
                weight = dequantize_module_weight(module.get_base_layer())  # W as is when not quantized
                delta = module.get_delta_weight("default")  # type: ignore[attr-defined]  # on every concrete layer
                deltas[f"{name}.weight"] = weight + delta.to(weight.dtype)
    state = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        state[plain] = deltas.get(plain, value)
    return state
