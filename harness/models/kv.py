"""A forward pass with a KV cache that works across transformers versions.

transformers 5.x renamed the `past_key_values` argument (and output field) to `cache`; 4.x only knows the
old name. Generation and scoring both go through `forward_with_cache` so the difference lives here only.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=64)
def _cache_arg(model_cls: Any) -> str:
    params = inspect.signature(model_cls.forward).parameters
    if "cache" in params or "past_key_values" in params:
        return "cache" if "cache" in params else "past_key_values"
    # A wrapper with **kwargs (PEFT, a test double): follow what this transformers version's models take.
    from transformers import LlamaForCausalLM

    return _cache_arg(LlamaForCausalLM)


def new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def forward_with_cache(model: Any, cache: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """(logits, updated cache) of `model(**kwargs)` continuing from `cache`."""
    model_cls: Any = type(model)
    name = _cache_arg(model_cls)
    out = model(**kwargs, **{name: cache}, use_cache=True)
    new = out.get("cache") if "cache" in out else out.get("past_key_values")
    return out.logits, new


def encode_left_padded(
    model: Any, prompts: list[list[int]], pad_id: int, device: Any
) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """One left-padded pass over `prompts`, shared by generation and scoring:
    (last-position logits [G, V], KV cache, attention mask [G, L], position ids [G, L])."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p) :] = 1
    ids, attn = ids.to(device), attn.to(device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    logits, cache = forward_with_cache(
        model, new_cache(), input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=1
    )
    return logits[:, -1], cache, attn, positions


def select_cache(cache: Any, index: torch.Tensor) -> Any:
    """A NEW cache whose row i is row `index[i]` of `cache` (rows may repeat); `cache` is left intact, so
    one encoded prompt batch can serve several response batches."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        from transformers import DynamicCache

        return DynamicCache(
            ddp_cache_data=[(layer.keys.index_select(0, index), layer.values.index_select(0, index)) for layer in layers]
        )
    import copy

    new = copy.deepcopy(cache)  # older transformers: no per-layer objects
    new.reorder_cache(index)
    return new
