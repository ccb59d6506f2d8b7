"""PLaD: Preference-based LLM Distillation with pseudo-preference pairs (Zhang et al., 2024, "PLaD:
Preference-based Large Language Model Distillation with Pseudo-Preference Pairs", arXiv 2406.02886).

PLaD builds pseudo-preference pairs (the teacher's output preferred over the student's) and trains the
student with a ranking CALIBRATION loss on its length-normalised sequence log-likelihoods:
    loss = max(0, delta - (log P(y_w|x)/|y_w| - log P(y_l|x)/|y_l|))
so the student's own likelihood ranks the pair the way the teacher does, by at least the margin delta.
Interpretations made here: (1) pairs come from the shared samples ordered by the teacher's judgement
(teacher-best vs teacher-worst by default, `baselines.pairs`) rather than "teacher output vs student
output", so every method sees the same prompts, samples and teacher judgement; (2) `loss: logistic`
offers the smooth variant log(1 + exp(delta - margin)); (3) an optional `nll_weight` adds the chosen
response's token NLL, the usual calibration regulariser (off by default).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from baselines.pairs import PairParams, PairwiseMethod, pair_logprobs, preference_metrics
from harness.methods.base import LossOutput, TrainContext


def plad_loss(mean_chosen: torch.Tensor, mean_rejected: torch.Tensor, margin: float,
              kind: Literal["hinge", "logistic"] = "hinge") -> torch.Tensor:
    """Per-pair calibration loss [B] from mean (length-normalised) log-probs [B]."""
    gap = margin - (mean_chosen - mean_rejected)
    return torch.relu(gap) if kind == "hinge" else F.softplus(gap)


class PLaDParams(PairParams):
    margin: float = Field(1.0, ge=0)
    """The calibration margin delta."""
    loss: Literal["hinge", "logistic"] = "hinge"
    """`hinge` (PLaD) or `logistic` (its smooth variant)."""
    nll_weight: float = Field(0.0, ge=0)
    """Weight of the chosen response's NLL added to the loss (0: off)."""


class PLaDMethod(PairwiseMethod):
    """PLaD (Zhang et al. 2024): margin ranking calibration on length-normalised log-likelihoods."""

    name: ClassVar[str] = "plad"
    Params: ClassVar[type[BaseModel]] = PLaDParams
    params: PLaDParams

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        lp = pair_logprobs(model, batch)
        losses = plad_loss(lp["mean_chosen"], lp["mean_rejected"], self.params.margin, self.params.loss)
        loss = losses.mean()
        metrics = {"calibration": float(loss.detach())}
        if self.params.nll_weight > 0:
            nll = -(lp["sum_chosen"].sum() / lp["len_chosen"].sum().clamp_min(1))
            loss = loss + self.params.nll_weight * nll
            metrics["nll"] = float(nll.detach())
        margin = lp["mean_chosen"] - lp["mean_rejected"]
        return LossOutput(loss, {**metrics, **preference_metrics(margin)})
