"""Shared building blocks for method losses: pack (prompt, response) pairs and score them.

`pack_sequences` right-pads `prompt_ids + response_ids` into one batch with a mask that is 1 exactly on
the response tokens; `sequence_logprobs` returns the sum and the mean log-probability of the response
tokens under a model. Every method that scores responses uses these, so they agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    response_mask: torch.Tensor  # [B, L] 1 on response tokens (the tokens being predicted)

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def sequence_logprobs(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return sequence_logprobs(model, self)

    def to(self, device: torch.device | str) -> Packed:
        return Packed(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def fit_lengths(prompt: list[int], response: list[int], max_length: int, max_prompt: int) -> tuple[list[int], list[int]]:
    """Cut the prompt from the left to `max_prompt`, then the response from the right to fit."""
    prompt = prompt[-max_prompt:]
    room = max(1, max_length - len(prompt))
    return prompt, response[:room]


def pack_sequences(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int, max_length: int, max_prompt: int
) -> Packed:
    assert len(prompts) == len(responses)
    rows = [fit_lengths(p, r, max_length, max_prompt) for p, r in zip(prompts, responses, strict=True)]
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


def token_logprobs(model: torch.nn.Module, packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log-prob of the actual next token, and the mask of response positions.

    Returns (logp [B, L-1], mask [B, L-1]) where position t scores token t+1.
    """
    logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits[:, :-1]
    targets = packed.input_ids[:, 1:]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = packed.response_mask[:, 1:].to(logp.dtype)
    return logp * mask, mask


def sequence_logprobs(model: torch.nn.Module, packed: Packed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum log-prob [B], mean log-prob [B], response token count [B]) of the response tokens."""
    logp, mask = token_logprobs(model, packed)
    count = mask.sum(-1)
    total = logp.sum(-1)
    return total, total / count.clamp_min(1), count


def nll_loss(model: torch.nn.Module, packed: Packed) -> torch.Tensor:
    """Token-averaged NLL over response tokens (the SFT objective)."""
    logp, mask = token_logprobs(model, packed)
    return -(logp.sum() / mask.sum().clamp_min(1))


__all__ = [
    "Packed",
    "fit_lengths",
    "pack_sequences",
    "token_logprobs",
    "sequence_logprobs",
    "nll_loss",
]
