"""SFT: supervised fine-tuning (maximum likelihood) on the teacher-preferred response of each prompt.

Plain next-token negative log-likelihood, the standard SFT objective. Interpretation made here: the
"teacher-preferred" response is the best of the prompt's shared samples under the same teacher judgement
the pairwise methods and PAD use (MCQ win probability by default, the teacher's mean log-probability as
an option; see `baselines.pairs`). Loss weighting: averaged over all response tokens of the micro-batch
(a long response counts more than a short one).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from baselines.batching import encode_example, group_fields, model_device, pack_encoded
from baselines.pairs import Preference, preference_signal, preferred_index
from harness.methods.base import LossOutput, Method, PromptGroup, TrainContext
from harness.methods.common import Packed, token_logprobs


def nll_from_token_logprobs(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-averaged negative log-likelihood: -sum(mask * logp) / sum(mask)."""
    return -(token_logp * mask).sum() / mask.sum().clamp_min(1)


def nll_batch_loss(model: torch.nn.Module, batch: dict[str, Any]) -> LossOutput:
    packed: Packed = batch["packed"].to(model_device(model))
    logp, mask = token_logprobs(model, packed)
    loss = nll_from_token_logprobs(logp, mask)
    return LossOutput(loss, {"nll": float(loss.detach()), "response_tokens": float(mask.sum())})


class SFTParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    preference: Preference = "mcq"
    """How the teacher-preferred response is picked: `mcq` or `teacher_logprob` (as the pairwise methods)."""


class SFTMethod(Method):
    """SFT: NLL on the teacher-preferred sample of each prompt."""

    name: ClassVar[str] = "sft"
    Params: ClassVar[type[BaseModel]] = SFTParams
    params: SFTParams

    def signals_needed(self) -> frozenset[str]:
        return frozenset({preference_signal(self.params.preference)})

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        examples = []
        for g in groups:
            best = preferred_index(g, self.params.preference)
            examples.append({"prompt_id": g.prompt_id, "messages": g.messages, "responses": [g.responses[best]],
                             "finished": [g.finished_flags()[best]], "response_indices": [best],
                             **group_fields(g)})
        return examples

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        return collate_responses(examples, ctx)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        return nll_batch_loss(model, batch)


def collate_responses(examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
    """Every (messages, response) of every example, packed into one batch (`finished` flags: an unfinished
    response is taught without an end-of-turn token)."""
    encoded = []
    for e in examples:
        prompt, responses = encode_example(ctx, e)
        encoded += [(prompt, r) for r in responses]
    packed = pack_encoded(ctx, encoded)
    return {"packed": packed, "student_tokens": packed.num_tokens}
