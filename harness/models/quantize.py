"""Quantized weights (`quantization:` on a model spec): which library quantizes a model on a device, how it
is loaded that way, and what enters the model's identity.

- `int8`: bitsandbytes' LLM.int8 on CUDA when bitsandbytes is installed; otherwise torchao's int8
  weight-only (per-row scales, fp compute), which also runs on CPUs. An `offload` model takes torchao on
  CUDA too: bitsandbytes weights are placed by accelerate and cannot wait in host memory between stages.
- `nf4`: bitsandbytes' 4-bit NormalFloat with double quantization, as QLoRA loads its base (CUDA only).

The two int8 libraries give different log-probabilities, so the identity records the library that was
used ("int8/torchao"), not only the request; an unquantized model's identity has no entry at all (the keys
of runs made before quantization existed stay as they were). Input and output embeddings stay in the load
dtype, as transformers' own quantizers leave them.

Only the transformers path reads this: a vLLM engine loads the weights from disk itself and takes vLLM's
own `backends.vllm.quantization` (`harness.preflight` refuses a quantized model served by vLLM).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from harness.config import ModelSpec
from harness.errors import ModelSourceError

TORCHAO, BITSANDBYTES = "torchao", "bitsandbytes"
_EXTRAS = {TORCHAO: "quantization", BITSANDBYTES: "quantization-cuda"}  # pyproject.toml's extras


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _install(library: str) -> str:
    return f"`pip install 'pad-harness[{_EXTRAS[library]}]'`"


def _resolve(spec: ModelSpec, device: str) -> tuple[str | None, str | None]:
    """(library, None), or (None, the one-line problem) when the request cannot be met on `device`."""
    request = spec.quantization
    if request is None:
        return None, None
    cuda = str(device).startswith("cuda")
    if request == "nf4":
        if not cuda:
            return None, (f"quantization nf4 is bitsandbytes' 4-bit format, which needs a CUDA GPU, but the model "
                          f"runs on {device}; use `quantization: int8` (torchao runs on CPUs) or none")
        if spec.model.startswith("tiny:"):
            return None, "quantization nf4 needs weights loaded from files; tiny models take `quantization: int8`"
        if not _installed(BITSANDBYTES):
            return None, f"quantization nf4 needs bitsandbytes: {_install(BITSANDBYTES)}, or use `quantization: int8`"
        if spec.offload:
            return None, ("quantization nf4 (bitsandbytes) weights cannot move between host and GPU; remove "
                          "`offload` or use `quantization: int8` (torchao's, which moves)")
        return BITSANDBYTES, None
    # int8. Tiny models are built in memory, where only torchao quantizes (bitsandbytes converts while loading).
    if cuda and not spec.offload and not spec.model.startswith("tiny:") and _installed(BITSANDBYTES):
        return BITSANDBYTES, None
    if not _installed(TORCHAO):
        return None, f"quantization int8 needs torchao here ({device}): {_install(TORCHAO)}"
    return TORCHAO, None


def quantization_problem(spec: ModelSpec, device: str) -> str | None:
    """Why `spec.quantization` cannot be loaded on `device` (one line that says what to do), or None."""
    return _resolve(spec, device)[1]


def implementation(spec: ModelSpec, device: str) -> str | None:
    """The library that quantizes `spec` on `device` (None: not quantized); a `ModelSourceError` if none can."""
    library, problem = _resolve(spec, device)
    if problem:
        raise ModelSourceError(f"model {spec.model!r}: {problem}")
    return library


def identity_entry(spec: ModelSpec, library: str | None) -> dict[str, Any]:
    """What quantization by `library` (`implementation`) adds to the model's identity: {"quantization":
    "int8/torchao"}, or nothing."""
    return {"quantization": f"{spec.quantization}/{library}"} if library else {}


def library_of(model: Any) -> str | None:
    """The library that quantized a loaded transformers model (None: not quantized by one of ours)."""
    method = getattr(model, "quantization_method", None)  # transformers' QuantizationMethod, a str enum
    value = getattr(method, "value", method)
    return value if value in (TORCHAO, BITSANDBYTES) else None


def places_itself(library: str | None) -> bool:
    """Whether the loaded model is already on its device and must not be moved or cast (bitsandbytes)."""
    return library == BITSANDBYTES


def _torchao_quantization() -> Any:
    import torchao.quantization  # installed: `_resolve` chose torchao only if it is

    return torchao.quantization


def loading_options(spec: ModelSpec, library: str | None, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """`from_pretrained` keywords that load the weights quantized ({} when not quantized)."""
    if library is None:
        return {}
    import transformers

    if library == TORCHAO:
        int8 = _torchao_quantization().Int8WeightOnlyConfig()
        return {"quantization_config": transformers.TorchAoConfig(int8)}
    if spec.quantization == "nf4":
        config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                 bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    else:
        config = transformers.BitsAndBytesConfig(load_in_8bit=True)
    # bitsandbytes quantizes as the weights reach the GPU: it is placed while loading, never moved later.
    return {"quantization_config": config, "device_map": spec.device_map or device}


def quantize_in_memory(model: Any, library: str | None) -> Any:
    """A model built in memory (tiny random-init models) quantized in place as `from_pretrained` would:
    its linear layers, not its embeddings or output head."""
    if library is None:
        return model
    if library != TORCHAO:  # `_resolve` gives tiny models torchao only
        raise ModelSourceError(f"a model built in memory cannot be quantized with {library}; use torchao (int8)")
    quantization = _torchao_quantization()
    head = model.get_output_embeddings()

    def linear_not_head(module: torch.nn.Module, _name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and module is not head

    quantization.quantize_(model, quantization.Int8WeightOnlyConfig(), filter_fn=linear_not_head)
    return model


def _storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds, a quantized tensor's inner tensors (int8 data, scales) counted instead of its
    nominal dtype."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = flatten(tensor)
        return sum(_storage_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)
    return tensor.numel() * tensor.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's parameters and buffers occupy as stored (a tied weight once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _storage_bytes(tensor)
    return total
