"""Shared building blocks for method losses: pack (prompt, response) pairs and score them.

`pack_sequences` right-pads `prompt_ids + response_ids` into one batch with a mask that is 1 exactly on
the response tokens; `sequence_logprobs` returns the sum and the mean log-probability of the response
tokens under a model. Every method that scores responses uses these, so they agree by construction.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    response_mask: torch.Tensor  # [B, L] 1 on response tokens (the tokens being predicted)

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def sequence_logprobs(self, model: torch.nn.Module, score_dtype: torch.dtype = torch.float32
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return sequence_logprobs(model, self, score_dtype)

    def to(self, device: torch.device | str) -> Packed:
        return Packed(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def fit_lengths(prompt: list[int], response: list[int], max_length: int, max_prompt: int) -> tuple[list[int], list[int]]:
    """Cut the prompt from the left to `max_prompt`, then the response from the right to fit."""
    prompt = prompt[-max_prompt:]
    room = max(1, max_length - len(prompt))
    return prompt, response[:room]


def fit_group_as_released(prompt: list[int], responses: list[list[int]], max_length: int,
                          max_prompt: int) -> tuple[list[int], list[list[int]]]:
    """TRL's DPO/SimPO-trainer cut (`tokenize_row`, as the released PAD code runs it with truncation_mode
    `keep_end`): only when the prompt plus the group's LONGEST response exceeds `max_length` is the prompt cut
    to its last `max_prompt` tokens, and if the prompt plus the longest response still exceeds it, EVERY
    response of the group is cut to `max_length - max_prompt` tokens (an end-of-turn token cut off stays off).
    A prompt longer than `max_prompt` whose group fits is not cut."""
    longest = max((len(r) for r in responses), default=0)
    if len(prompt) + longest > max_length:
        prompt = prompt[-max_prompt:]
        if len(prompt) + longest > max_length:
            responses = [r[: max_length - max_prompt] for r in responses]
    return list(prompt), [list(r) for r in responses]


def fit_group(prompt: list[int], responses: list[list[int]], max_length: int, max_prompt: int,
              truncation: str = "per_response") -> tuple[list[int], list[list[int]]]:
    """One prompt and its group of responses (every response sampled for it) cut to the budget
    (`budget.truncation`): `per_response` cuts the prompt to `max_prompt` and each response on its own to what
    the prompt leaves (`fit_lengths`); `group_as_released` is `fit_group_as_released`. Every response of a
    group shares one cut prompt either way. (`truncation` is typed `str`, not `config.Truncation`: the GPU
    check runs this module on a bare box without harness.config and its yaml import.)"""
    if truncation == "group_as_released":
        return fit_group_as_released(prompt, responses, max_length, max_prompt)
    if truncation != "per_response":
        raise ValueError(f"unknown truncation rule {truncation!r}")
    cut_prompt = prompt[-max_prompt:]
    return list(cut_prompt), [fit_lengths(prompt, r, max_length, max_prompt)[1] for r in responses]


def pack_sequences(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int, max_length: int, max_prompt: int,
    fitted: bool = False,
) -> Packed:
    """`fitted`: the pairs are already cut to the budget (`fit_group`): packed as they are."""
    assert len(prompts) == len(responses)
    rows = ([(list(p), list(r)) for p, r in zip(prompts, responses, strict=True)] if fitted
            else [fit_lengths(p, r, max_length, max_prompt) for p, r in zip(prompts, responses, strict=True)])
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    resp = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[i, : len(seq)] = 1
        resp[i, len(p) : len(seq)] = 1
    return Packed(ids, attn, resp)


def score_arithmetic(score_dtype: torch.dtype, device: torch.device) -> Any:
    """The context the log-softmax and the sums over tokens run in: as written for fp32 (the default), and
    with autocast OFF for a reduced `score_dtype` (bf16), which CUDA autocast would otherwise run in fp32
    (log_softmax, sum, exp and log are on its fp32 list). The released bf16 DeepSpeed engine ran them in bf16."""
    if score_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def token_logprobs(model: torch.nn.Module, packed: Packed,
                   score_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log-prob of the actual next token, and the mask of response positions.

    Returns (logp [B, L-1], mask [B, L-1]) where position t scores token t+1. `score_dtype`: the dtype the
    log-softmax is computed in (fp32; bf16 rounds as the released bf16 engine did: `score_arithmetic`).
    """
    logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits[:, :-1]
    targets = packed.input_ids[:, 1:]
    with score_arithmetic(score_dtype, logits.device):
        logp = torch.log_softmax(logits.to(score_dtype), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask = packed.response_mask[:, 1:].to(logp.dtype)
        return logp * mask, mask


def sequence_logprobs(model: torch.nn.Module, packed: Packed, score_dtype: torch.dtype = torch.float32
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum log-prob [B], mean log-prob [B], response token count [B]) of the response tokens, in
    `score_dtype` (see `token_logprobs`)."""
    logp, mask = token_logprobs(model, packed, score_dtype)
    with score_arithmetic(score_dtype, logp.device):
        count = mask.sum(-1)
        total = logp.sum(-1)
        return total, total / count.clamp_min(1), count


def nll_loss(model: torch.nn.Module, packed: Packed) -> torch.Tensor:
    """Token-averaged NLL over response tokens (the SFT objective)."""
    logp, mask = token_logprobs(model, packed)
    return -(logp.sum() / mask.sum().clamp_min(1))


__all__ = [
    "Packed",
    "fit_group",
    "fit_group_as_released",
    "fit_lengths",
    "pack_sequences",
    "score_arithmetic",
    "token_logprobs",
    "sequence_logprobs",
    "nll_loss",
]
