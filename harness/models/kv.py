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


def left_pad(seqs: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [G, L] left-padded with `pad_id`, and their attention mask (1 on real tokens)."""
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        attn[i, width - len(x):] = 1
    return ids.to(device), attn.to(device)


def encode_left_padded(
    model: Any, prompts: list[list[int]], pad_id: int, device: Any
) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """One left-padded pass over `prompts`, shared by generation and scoring:
    (last-position logits [G, V], KV cache, attention mask [G, L], position ids [G, L])."""
    ids, attn = left_pad(prompts, pad_id, device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    logits, cache = forward_with_cache(
        model, new_cache(), input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=1
    )
    return logits[:, -1], cache, attn, positions


def pad_tolerance(device: Any) -> float:
    """Padding a length bucket may hold, as a share of its padded size: padded positions are computed for
    nothing, while wider batches run matmuls more efficiently (a little on CPU, a lot on GPU). Measured on
    SmolLM2 / 2 CPU cores: 0.3 beat both 0.1 (batches too small for two threads) and no bucketing."""
    return 0.3 if str(device).startswith("cpu") else 0.5


def length_buckets(lengths: list[int], tolerance: float) -> list[list[int]]:
    """Indices grouped by similar length, longest first, each bucket's padding at most `tolerance` of it."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets:
            bucket = buckets[-1]
            width = lengths[bucket[0]]
            real = sum(lengths[j] for j in bucket) + lengths[i]
            if width * (len(bucket) + 1) - real <= tolerance * width * (len(bucket) + 1):
                bucket.append(i)
                continue
        buckets.append([i])
    return buckets


def encode_in_length_buckets(
    model: Any, prompts: list[list[int]], pad_id: int, device: Any
) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """`encode_left_padded`, but prompts of very different lengths (answers to several benchmarks decoded
    together) are encoded in buckets of similar length and their caches joined, left-padded with masked
    zeros to the longest: padding is not computed. Same four values, rows in `prompts` order."""
    if not hasattr(new_cache(), "layers"):  # transformers 4.x: one padded pass
        return encode_left_padded(model, prompts, pad_id, device)
    buckets = length_buckets([len(p) for p in prompts], pad_tolerance(device))
    # each bucket encodes a prefix its prompts share (a chat template's default system prompt) once
    parts = [encode_shared_prefix(model, [prompts[i] for i in b], pad_id, device)[:4] for b in buckets]
    if len(parts) == 1:
        return parts[0]
    width = max(p[2].shape[1] for p in parts)
    order = torch.tensor([i for b in buckets for i in b], device=device)
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order), device=device)

    def joined(tensors: list[torch.Tensor], seq_dim: int) -> torch.Tensor:
        padded = []
        for t in tensors:
            shape = list(t.shape)
            shape[seq_dim] = width - t.shape[seq_dim]
            padded.append(torch.cat([t.new_zeros(shape), t], dim=seq_dim))
        return torch.cat(padded).index_select(0, back)

    from transformers import DynamicCache

    n_layers = len(parts[0][1].layers)
    cache = DynamicCache(ddp_cache_data=[
        (joined([p[1].layers[k].keys for p in parts], 2), joined([p[1].layers[k].values for p in parts], 2))
        for k in range(n_layers)])
    logits = torch.cat([p[0] for p in parts]).index_select(0, back)
    return logits, cache, joined([p[2] for p in parts], 1), joined([p[3] for p in parts], 1)


def common_prefix_length(seqs: list[list[int]]) -> int:
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    for i in range(n):
        tok = seqs[0][i]
        if any(s[i] != tok for s in seqs[1:]):
            return i
    return n


def shared_prefix_length(seqs: list[list[int]]) -> int:
    """The prefix all `seqs` share, shortened so that each keeps at least one token after it."""
    return min([common_prefix_length(seqs)] + [len(x) - 1 for x in seqs])


def encode_shared_prefix(
    model: Any, prompts: list[list[int]], pad_id: int, device: Any, min_prefix: int = 16
) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, int]:
    """`encode_left_padded`, but a token prefix every prompt shares (a teacher's system prompt and
    demonstrations) is encoded ONCE and its KV cache repeated over the rows; only the suffixes run per row,
    left-padded after it. The mask then has a hole (prefix, padding, suffix); positions count real tokens,
    so the outputs equal the plain pass to float rounding. Returns the same four values plus the number of
    tokens actually run; prompts sharing fewer than `min_prefix` tokens take the plain pass."""
    common = shared_prefix_length(prompts)
    if len(prompts) < 2 or common < min_prefix:
        logits, cache, attn, positions = encode_left_padded(model, prompts, pad_id, device)
        return logits, cache, attn, positions, sum(len(p) for p in prompts)
    prefix = torch.tensor([prompts[0][:common]], dtype=torch.long, device=device)
    _, cache = forward_with_cache(model, new_cache(), input_ids=prefix, attention_mask=torch.ones_like(prefix),
                                  position_ids=torch.arange(common, device=device)[None, :], logits_to_keep=1)
    cache = select_cache(cache, torch.zeros(len(prompts), dtype=torch.long, device=device))
    suffixes = [p[common:] for p in prompts]
    ids, suffix_attn = left_pad(suffixes, pad_id, device)
    suffix_positions = common + (suffix_attn.cumsum(-1) - 1).clamp(min=0)
    attn = torch.cat([torch.ones((len(prompts), common), dtype=torch.long, device=device), suffix_attn], dim=1)
    logits, cache = forward_with_cache(model, cache, input_ids=ids, attention_mask=attn,
                                       position_ids=suffix_positions, logits_to_keep=1)
    positions = torch.cat([torch.arange(common, device=device).expand(len(prompts), common), suffix_positions], 1)
    return logits[:, -1], cache, attn, positions, common + sum(len(x) for x in suffixes)


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
