"""DPKD: Direct Preference Knowledge Distillation (Li et al., 2024, "Direct Preference Knowledge
Distillation for Large Language Models", arXiv 2406.19774).

DPKD maximises an implicit reward minus beta x the reverse KL from the student q to the teacher p; the
optimum gives the reward r(y|x) = beta log(q(y|x) / p(y|x)) + const, and the preference of the better
output over the worse one under a Bradley-Terry model gives a DPO-shaped loss WITH THE TEACHER AS THE
REFERENCE:
    loss = -log sigmoid( beta * [(log q(y_w) - log p(y_w)) - (log q(y_l) - log p(y_l))] )
Interpretations made here: (1) the paper prefers the teacher's output over the student's; this harness
takes both responses of a pair from the shared samples, ordered by the teacher's judgement (teacher-best
vs teacher-worst by default, `baselines.pairs`), so DPKD sees the same data as every other method;
(2) log-likelihoods are LENGTH-NORMALISED (mean log-prob over response tokens), with the teacher's term
from the shared `Signal.TEACHER_AVG_LOGPROB` (so no teacher runs during training); `reference: none`
drops the teacher term (a reference-free variant). beta = 1.0 by default (mean log-probs are on a much
smaller scale than DPO's sums).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from baselines.pairs import PairParams, PairwiseMethod, pair_logprobs, preference_metrics
from harness.methods.base import LossOutput, PromptGroup, Signal, TrainContext


def dpkd_loss(student_chosen: torch.Tensor, student_rejected: torch.Tensor, teacher_chosen: torch.Tensor,
              teacher_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair loss [B] from mean log-probs [B] of the student and the teacher (the reference)."""
    return -F.logsigmoid(beta * ((student_chosen - teacher_chosen) - (student_rejected - teacher_rejected)))


class DPKDParams(PairParams):
    beta: float = Field(1.0, gt=0)
    """Scale of the margin of log-ratios to the reference."""
    reference: Literal["teacher", "none"] = "teacher"
    """`teacher`: the teacher's mean log-probs are the reference (DPKD); `none`: reference-free."""


class DPKDMethod(PairwiseMethod):
    """DPKD (Li et al. 2024): DPO-style loss on length-normalised log-likelihoods, teacher as reference."""

    name: ClassVar[str] = "dpkd"
    Params: ClassVar[type[BaseModel]] = DPKDParams
    params: DPKDParams

    def signals_needed(self) -> frozenset[str]:
        extra = {Signal.TEACHER_AVG_LOGPROB} if self.params.reference == "teacher" else set()
        return super().signals_needed() | extra

    def pair_fields(self, group: PromptGroup, chosen: int, rejected: int) -> dict[str, Any]:
        if self.params.reference == "none":
            return {"teacher_chosen": 0.0, "teacher_rejected": 0.0}
        teacher = group.signals[Signal.TEACHER_AVG_LOGPROB]
        return {"teacher_chosen": float(teacher[chosen]), "teacher_rejected": float(teacher[rejected])}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        lp = pair_logprobs(model, batch)
        t_c = batch["teacher_chosen"].to(lp["mean_chosen"].device)
        t_r = batch["teacher_rejected"].to(lp["mean_chosen"].device)
        losses = dpkd_loss(lp["mean_chosen"], lp["mean_rejected"], t_c, t_r, self.params.beta)
        margin = (lp["mean_chosen"] - t_c) - (lp["mean_rejected"] - t_r)
        return LossOutput(losses.mean(), {"loss": float(losses.detach().mean()), **preference_metrics(margin)})
