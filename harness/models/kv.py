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
def _cache_arg(model_cls: type) -> str:
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
    name = _cache_arg(type(model))
    out = model(**kwargs, **{name: cache}, use_cache=True)
    new = out.get("cache") if "cache" in out else out.get("past_key_values")
    return out.logits, new
