"""Examples -> packed tensors, the same way for every baseline.

A sequence is `prompt_ids + response_ids` as `harness.models.chat` defines them, so a response has the
same token ids here as in the signals stage (teacher top-k, reference log-probs) and in PAD.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.base import TrainContext
from harness.methods.common import Packed, fit_lengths, pack_sequences
from harness.methods.shared_prompt import GroupPacked, pack_groups


def encode(ctx: TrainContext, messages: list[dict[str, str]], response: str,
           finished: bool = True) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one (conversation, response) for the student, cut to the budget; an
    unfinished response (cut at sampling) gets no end-of-turn token."""
    prompt = ctx.formatter.prompt_ids(messages, max_length=ctx.max_prompt_length)
    response_ids = ctx.formatter.response_ids(response, finished=finished)
    return fit_lengths(prompt, response_ids, ctx.max_length, ctx.max_prompt_length)


def pad_id(ctx: TrainContext) -> int:
    return int(ctx.formatter.pad_id)


def pack_pairs(ctx: TrainContext, items: list[tuple[list[dict[str, str]], str, bool]]) -> Packed:
    """Pack (messages, response, finished) items into one right-padded batch, response tokens masked in."""
    encoded = [encode(ctx, messages, response, finished) for messages, response, finished in items]
    return pack_sequences([p for p, _ in encoded], [r for _, r in encoded], pad_id(ctx), ctx.max_length,
                          ctx.max_prompt_length)


def pack_pair_groups(ctx: TrainContext,
                     items: list[tuple[list[dict[str, str]], tuple[str, bool], tuple[str, bool]]]) -> GroupPacked:
    """(messages, (chosen, finished), (rejected, finished)) items, each prompt encoded once for both;
    results in `pack_pairs`' layout: every chosen response first, then every rejected one."""
    fmt = ctx.formatter
    prompts = [fmt.prompt_ids(messages, max_length=ctx.max_prompt_length) for messages, _, _ in items]
    responses = [[fmt.response_ids(chosen, finished=c_done), fmt.response_ids(rejected, finished=r_done)]
                 for _, (chosen, c_done), (rejected, r_done) in items]
    order = [[i, len(items) + i] for i in range(len(items))]
    return pack_groups(prompts, responses, pad_id(ctx), ctx.max_length, ctx.max_prompt_length, order=order)


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # a parameter-less test double
        return torch.device("cpu")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors and Packed values moved to `device` (the trainer may or may not have done it)."""
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor | Packed | GroupPacked):
            moved[key] = value.to(device)
        else:
            moved[key] = value
    return moved
