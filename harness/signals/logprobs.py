"""Sequence log-probs of sampled responses (teacher mean, initial student mean and SUM, DPO's reference),
scored on exactly the tokens training packs (`scoring_inputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.config import Truncation
from harness.methods.common import fit_group
from harness.models.base import LoadedModel
from harness.models.chat import ChatFormatter
from harness.models.scoring import Scorer
from harness.signals.common import finished_flags, group_field


def scoring_inputs(
    model: LoadedModel, groups: list[Any], max_length: int | None, max_prompt_length: int | None,
    truncation: Truncation = "per_response", cut_as: ChatFormatter | None = None,
) -> list[tuple[list[int], list[list[int]]]]:
    """Token ids exactly as training packs them (`fit_group` under the budget's truncation rule, the group
    being every sampled response of the prompt), so a reference log-prob covers exactly the tokens the
    trainer scores.

    `cut_as`: the student's chat format, when `model` is another model (the teacher). Training's cut is the
    STUDENT's: its prompt, its response tokens. The teacher keeps its WHOLE prompt (its context: system
    prompt, demonstrations; the budget's `max_prompt_length` limits training inputs, not the teacher's
    context), and each of its responses is cut to the number of tokens training keeps of the student's: the
    same tokens when they share a tokenizer (token-level KD needs that); with another tokenizer, the same
    count of the teacher's own tokens (an approximation, said in docs/fidelity.md)."""
    fmt = model.formatter
    out = []
    for g in groups:
        messages = group_field(g, "messages")
        finished = finished_flags(g)
        prompt = fmt.prompt_ids(messages)
        responses = [fmt.response_ids(r, finished=done) for r, done in zip(group_field(g, "responses"), finished,
                                                                             strict=True)]
        if cut_as is not None and max_length is not None:
            whole = [cut_as.response_ids(r, finished=done) for r, done in zip(group_field(g, "responses"), finished,
                                                                              strict=True)]
            _, kept = fit_group(cut_as.prompt_ids(messages), whole, max_length, max_prompt_length or max_length,
                                truncation)
            responses = [r[: len(k)] if len(k) < len(w) else r for r, k, w in zip(responses, kept, whole, strict=True)]
        elif max_length is not None:
            prompt, responses = fit_group(prompt, responses, max_length, max_prompt_length or max_length, truncation)
        elif max_prompt_length is not None and cut_as is None:
            prompt = prompt[-max_prompt_length:]
        out.append((prompt, responses))
    return out


@dataclass
class SequenceScores:
    mean: list[list[float]]  # [P][n] mean log-prob over response tokens
    sum: list[list[float]]  # [P][n] summed log-prob
    n_tokens: list[list[int]]
    forward_tokens: int = 0


def sequence_scores(
    model: LoadedModel, groups: list[Any], batch_size: int = 8, max_length: int | None = None,
    max_prompt_length: int | None = None, progress: str | None = "log-probs", truncation: Truncation = "per_response",
    cut_as: ChatFormatter | None = None,
) -> SequenceScores:
    """Mean and sum log-probs of every response in one scoring pass (both come from the same forward).
    `cut_as`: the student's chat format when `model` is the teacher (see `scoring_inputs`)."""
    scorer = Scorer(model, batch_size=batch_size)
    tokens = scoring_inputs(model, groups, max_length, max_prompt_length, truncation, cut_as)
    scores = scorer.score_groups(tokens, progress)
    return SequenceScores(
        mean=[[s.mean_logprob for s in row] for row in scores],
        sum=[[s.sum_logprob for s in row] for row in scores],
        n_tokens=[[s.n_tokens for s in row] for row in scores],
        forward_tokens=scorer.forward_tokens,
    )
