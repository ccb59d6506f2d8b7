"""Examples -> packed tensors, the same way for every baseline.

A sequence is `prompt_ids + response_ids` as `harness.models.chat` defines them, so a response has the
same token ids here as in the signals stage (teacher top-k, reference log-probs) and in PAD. Lengths are
cut as the budget's truncation rule cuts the prompt's whole group of sampled responses (`fit_group`): an
example made of some of them carries the group (`group_fields`).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.methods.base import PromptGroup, TrainContext
from harness.methods.common import Packed, fit_group, pack_sequences
from harness.methods.shared_prompt import GroupPacked, pack_groups


def encode(ctx: TrainContext, messages: list[dict[str, str]], response: str,
           finished: bool = True) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one (conversation, response) for the student, cut to the budget as a
    group of one; an unfinished response (cut at sampling) gets no end-of-turn token."""
    prompt, (cut,) = encode_group(ctx, messages, [(response, finished)])
    return prompt, cut


def encode_group(ctx: TrainContext, messages: list[dict[str, str]], group: list[tuple[str, bool]],
                 keep: list[int] | None = None) -> tuple[list[int], list[list[int]]]:
    """The student's prompt ids and the ids of the responses at `keep` (all when None) of one prompt's group
    of (response, finished), cut to the budget as the whole group is (`ctx.truncation`, `fit_group`): under
    `group_as_released` the cut depends on the group's longest response, so every response is tokenized."""
    fmt = ctx.formatter
    keep = list(range(len(group))) if keep is None else keep
    prompt = fmt.prompt_ids(messages)
    if ctx.truncation == "per_response":  # each response on its own: only the kept ones are needed
        chosen = [fmt.response_ids(group[i][0], finished=group[i][1]) for i in keep]
        return fit_group(prompt, chosen, ctx.max_length, ctx.max_prompt_length, ctx.truncation)
    prompt, cut = fit_group(prompt, [fmt.response_ids(text, finished=done) for text, done in group],
                            ctx.max_length, ctx.max_prompt_length, ctx.truncation)
    return prompt, [cut[i] for i in keep]


def group_fields(group: PromptGroup) -> dict[str, Any]:
    """What an example built from SOME of a prompt's sampled responses carries so that they are cut as the
    whole group is (`example_group`): the signals (reference log-probs, teacher top-k) score every sampled
    response of the prompt with the group's cut, and training must cover the same tokens."""
    return {"group_responses": list(group.responses), "group_finished": group.finished_flags()}


def example_group(example: dict[str, Any], responses: list[str], finished: list[bool],
                  indices: list[int]) -> tuple[list[tuple[str, bool]], list[int]]:
    """(the group to cut with, the positions of `responses` in it): the example's `group_fields` with the
    responses' indices in the sampled group, else the responses themselves (a group of their own)."""
    if "group_responses" not in example:
        return list(zip(responses, finished, strict=True)), list(range(len(responses)))
    group = list(zip(example["group_responses"], example["group_finished"], strict=True))
    if len(indices) != len(responses) or any(group[i][0] != text for i, text in zip(indices, responses, strict=True)):
        raise ValueError(f"example {example.get('prompt_id')!r}: its responses are not its group's responses at "
                         f"{indices} (build examples with `group_fields` and the responses' indices)")
    return group, indices


def encode_example(ctx: TrainContext, example: dict[str, Any]) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, ids of each of the example's responses), cut as their group is (batching.example_group;
    `response_indices`: their positions in the sampled group, with `group_fields`)."""
    responses = list(example["responses"])
    finished = list(example.get("finished") or [True] * len(responses))
    group, keep = example_group(example, responses, finished, list(example.get("response_indices") or []))
    return encode_group(ctx, example["messages"], group, keep)


def pad_id(ctx: TrainContext) -> int:
    return int(ctx.formatter.pad_id)


def pack_encoded(ctx: TrainContext, encoded: list[tuple[list[int], list[int]]]) -> Packed:
    """(prompt ids, response ids) pairs already cut to the budget, in one right-padded batch."""
    return pack_sequences([p for p, _ in encoded], [r for _, r in encoded], pad_id(ctx), ctx.max_length,
                          ctx.max_prompt_length, fitted=True)


def pack_pairs(ctx: TrainContext, items: list[tuple[list[dict[str, str]], str, bool]]) -> Packed:
    """Pack (messages, response, finished) items, each its own group, into one right-padded batch, response
    tokens masked in."""
    return pack_encoded(ctx, [encode(ctx, messages, response, finished) for messages, response, finished in items])


def pack_pair_groups(ctx: TrainContext, encoded: list[tuple[list[int], list[int], list[int]]]) -> GroupPacked:
    """(prompt ids, chosen ids, rejected ids) items already cut to the budget, each prompt encoded once for
    both; results in `pack_pairs`' layout: every chosen response first, then every rejected one."""
    order = [[i, len(encoded) + i] for i in range(len(encoded))]
    return pack_groups([p for p, _, _ in encoded], [[c, r] for _, c, r in encoded], pad_id(ctx), ctx.max_length,
                       ctx.max_prompt_length, order=order, fitted=True)


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
