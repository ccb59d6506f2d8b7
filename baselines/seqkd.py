"""SeqKD: sequence-level knowledge distillation (Kim & Rush, 2016, "Sequence-Level Knowledge Distillation").

The student is trained with NLL on sequences the teacher generated itself (`Signal.TEACHER_SAMPLES`).
Interpretation made here: Kim & Rush train on the teacher's beam-search output; this harness uses the
teacher's own sampled responses (decoded with the experiment's sampling settings, from the teacher's
context), the first `samples_per_prompt` of them per prompt (default 1, the closest to one beam output).
The teacher's generation tokens are part of the shared precompute and are counted in the accounting of
every method that uses this signal. Loss weighting: averaged over the micro-batch's response tokens.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from baselines.sft import collate_responses, nll_batch_loss
from harness.errors import DataSourceError
from harness.methods.base import LossOutput, Method, PromptGroup, Signal, TrainContext


class SeqKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    samples_per_prompt: int = Field(1, ge=1)
    """Teacher responses per prompt trained on (the teacher generates them once, shared)."""


class SeqKDMethod(Method):
    """SeqKD (Kim & Rush 2016): NLL on the teacher's own generated responses."""

    name: ClassVar[str] = "seqkd"
    Params: ClassVar[type[BaseModel]] = SeqKDParams
    params: SeqKDParams
    required_signals: ClassVar[frozenset[str]] = frozenset({Signal.TEACHER_SAMPLES})

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        examples = []
        for g in groups:
            samples = g.signals[Signal.TEACHER_SAMPLES]
            responses = list(samples["responses"])[: self.params.samples_per_prompt]
            if not responses:
                raise DataSourceError(f"prompt {g.prompt_id!r} has no teacher samples; re-run the signals stage")
            finished = list(samples.get("finished") or [True] * len(samples["responses"]))
            examples.append({"prompt_id": g.prompt_id, "messages": g.messages, "responses": responses,
                             "finished": finished[: len(responses)]})
        return examples

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        return collate_responses(examples, ctx)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        return nll_batch_loss(model, batch)
