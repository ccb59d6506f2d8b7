"""Training on several responses to one prompt without encoding the prompt once per response.

`pack_sequences` lays out n (prompt, response) pairs as n rows, so the prompt runs n times, with
gradients. `pack_groups` lays out one row per prompt: the prompt once (but its last token), then each
response preceded by its own copy of the prompt's last token, with an attention mask under which a
response token sees the shared prompt and the earlier tokens of its own segment only, and positions that
continue the prompt's for every response. Each response token therefore gets exactly the context it has
in its own (prompt + response) sequence, so `sequence_logprobs` over a `GroupPacked` equals
`sequence_logprobs` over the `pack_sequences` layout (to float rounding; tested), while the model runs
Lp + n*Lr tokens instead of n*(Lp + Lr).

Why the last prompt token is repeated per response (n-1 extra tokens per prompt): it makes every scored
position distinct. Were one position to predict the first token of all n responses, the backward of the
gather `logits[rows, cols]` would accumulate n gradients into one element, and PyTorch's CPU
`index_put_(accumulate=True)` adds colliding elements in a thread-dependent order: with n >= 3 the sum
rounds differently from run to run and PAD trainings were not bitwise reproducible.

The custom mask is a 4D additive attention mask, which transformers passes through as-is to the `sdpa`
and `eager` attention kernels; `shares_prompts(model)` says when a model can take it (not flash
attention, not sliding-window models, whose window the custom mask would bypass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.methods.common import fit_lengths, score_arithmetic


@dataclass
class GroupPacked:
    input_ids: torch.Tensor  # [G, S]: prompt[:-1], then per response prompt[-1] + response[:-1], padding
    position_ids: torch.Tensor  # [G, S]: 0.. over the prompt, restarting at len(prompt)-1 for each segment
    segment: torch.Tensor  # [G, S]: 0 prompt, j+1 response j, -1 padding
    # One entry per scored token (the flat order is sequence by sequence, token by token):
    rows: torch.Tensor  # [K] row of the position whose logits predict the token
    cols: torch.Tensor  # [K] column of that position
    targets: torch.Tensor  # [K] the token
    owner: torch.Tensor  # [K] index of the (prompt, response) sequence it belongs to
    slot: torch.Tensor  # [K] its position within that sequence's response (a unique (owner, slot) per token)
    num_sequences: int

    @property
    def num_tokens(self) -> int:
        """Tokens the model runs (no padding): what a matched budget counts."""
        return int((self.segment >= 0).sum())

    def sequence_logprobs(self, model: Any, score_dtype: torch.dtype = torch.float32
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return group_sequence_logprobs(model, self, score_dtype)

    def to(self, device: torch.device | str) -> GroupPacked:
        return GroupPacked(self.input_ids.to(device), self.position_ids.to(device), self.segment.to(device),
                           self.rows.to(device), self.cols.to(device), self.targets.to(device),
                           self.owner.to(device), self.slot.to(device), self.num_sequences)

    def attention_mask(self, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
        """[G, 1, S, S]: True where query q may attend key k (what `sdpa` takes), or, given a dtype, the
        additive form `eager` attention adds to its scores (0 allowed, the dtype's minimum elsewhere)."""
        seg = self.segment
        width = seg.shape[1]
        idx = torch.arange(width, device=seg.device)
        causal = idx[None, :] <= idx[:, None]  # [S, S] key <= query
        key_seg, query_seg = seg[:, None, :], seg[:, :, None]
        allowed = causal[None] & (key_seg >= 0) & ((key_seg == 0) | (key_seg == query_seg))
        allowed |= torch.eye(width, dtype=torch.bool, device=seg.device)[None]  # padding rows stay finite
        if additive_dtype is None:
            return allowed[:, None]
        bias = torch.zeros(allowed.shape, dtype=additive_dtype, device=seg.device)
        bias.masked_fill_(~allowed, torch.finfo(additive_dtype).min)
        return bias[:, None]


def pack_groups(prompts: list[list[int]], responses: list[list[list[int]]], pad_id: int, max_length: int,
                max_prompt: int, order: list[list[int]] | None = None, fitted: bool = False) -> GroupPacked:
    """One row per prompt with all its responses; lengths cut exactly as `pack_sequences` cuts each pair
    (`fitted`: already cut to the budget by `fit_group`, packed as they are).
    Results come out group by group, response by response, unless `order[g][j]` gives the output index of
    response j of group g (e.g. all chosen responses first, then all rejected ones)."""
    assert len(prompts) == len(responses)
    rows_ids: list[list[int]] = []
    rows_pos: list[list[int]] = []
    rows_seg: list[list[int]] = []
    score_rows: list[int] = []
    score_cols: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    slot: list[int] = []
    sequence = 0
    for g, (prompt, group) in enumerate(zip(prompts, responses, strict=True)):
        # fit_lengths cuts the prompt first and on its own, so every response of a group shares one cut.
        cut_prompt = list(prompt) if fitted else fit_lengths(prompt, [], max_length, max_prompt)[0]
        if not cut_prompt:
            raise ValueError("pack_groups needs a non-empty prompt: its last position predicts each first token")
        shared = cut_prompt[:-1]
        ids, pos, seg = list(shared), list(range(len(shared))), [0] * len(shared)
        for j, response in enumerate(group):
            cut_response = list(response) if fitted else fit_lengths(prompt, response, max_length, max_prompt)[1]
            start = len(ids)
            for t, token in enumerate(cut_response):
                # Token t is predicted by this segment's copy of the last prompt token (t = 0) or by
                # response token t-1: every scored position is distinct (see the module docstring).
                score_rows.append(g)
                score_cols.append(start + t)
                targets.append(token)
                owner.append(sequence if order is None else order[g][j])
                slot.append(t)
            fed = cut_prompt[-1:] + cut_response[:-1]  # the last response token predicts nothing scored
            ids += fed
            pos += range(len(shared), len(shared) + len(fed))
            seg += [j + 1] * len(fed)
            sequence += 1
        rows_ids.append(ids)
        rows_pos.append(pos)
        rows_seg.append(seg)
    width = max(len(r) for r in rows_ids)
    input_ids = torch.full((len(rows_ids), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows_ids), width), dtype=torch.long)
    segment = torch.full((len(rows_ids), width), -1, dtype=torch.long)
    for g, (ids, pos, seg) in enumerate(zip(rows_ids, rows_pos, rows_seg, strict=True)):
        input_ids[g, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        position_ids[g, : len(pos)] = torch.tensor(pos, dtype=torch.long)
        segment[g, : len(seg)] = torch.tensor(seg, dtype=torch.long)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return GroupPacked(input_ids, position_ids, segment, as_long(score_rows), as_long(score_cols),
                       as_long(targets), as_long(owner), as_long(slot), sequence)


def _config(model: Any) -> Any:
    return getattr(getattr(model, "module", model), "config", None)  # DDP wraps the model in .module


def shares_prompts(model: Any) -> bool:
    """Whether `model` takes the custom 4D mask: `sdpa` or `eager` attention, and no sliding window."""
    config = _config(model)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    return not (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


def group_sequence_logprobs(model: Any, packed: GroupPacked, score_dtype: torch.dtype = torch.float32
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum log-prob [N], mean log-prob [N], token count [N]) of every (prompt, response) sequence, in the
    order the groups and their responses were given: what `sequence_logprobs` returns for the same pairs
    (`score_dtype` as there)."""
    eager = getattr(_config(model), "_attn_implementation", None) == "eager"
    mask = packed.attention_mask(next(model.parameters()).dtype if eager else None)
    logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=mask).logits
    scored = logits[packed.rows, packed.cols]  # [K, V]: only the positions that predict response tokens
    with score_arithmetic(score_dtype, scored.device):
        return _per_sequence(packed, scored, score_dtype)


def _per_sequence(packed: GroupPacked, scored: torch.Tensor, score_dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(scored.to(score_dtype), dim=-1).gather(-1, packed.targets.unsqueeze(-1)).squeeze(-1)
    n = packed.num_sequences
    # Sum per sequence through a [sequences, tokens] layout (each element written once), not index_add:
    # its atomic adds on GPUs sum in a run-dependent order.
    width = int(packed.slot.max()) + 1 if packed.slot.numel() else 1
    per_token = torch.zeros((n, width), dtype=logp.dtype, device=logp.device)
    per_token = per_token.index_put((packed.owner, packed.slot), logp)
    total = per_token.sum(-1)
    count = torch.bincount(packed.owner, minlength=n).to(logp.dtype)
    return total, total / count.clamp_min(1), count
