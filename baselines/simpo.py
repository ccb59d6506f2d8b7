"""SimPO: Simple Preference Optimization with a reference-free reward (Meng, Xia & Chen, 2024).

    loss = -log sigmoid( beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma )
i.e. a margin on LENGTH-NORMALISED log-likelihoods (mean log-prob over response tokens), with a target
reward margin gamma and no reference model. Defaults beta = 2.0, gamma = 0.5 are the SimPO release's
`SimPOConfig` defaults (beta 2.0, gamma_beta_ratio 0.25). The released PAD run trained SimPO with
beta = 10 and a margin hard-coded as 0.3 x beta, i.e. gamma = 3 (its `simpo_trainer.py` subtracts 0.3
from the log-ratio before multiplying by beta; its logged gamma_beta_ratio 0.5 is unused): the paper
configs set those. Interpretation made here: pairs are the teacher-ranked samples of `baselines.pairs`
(teacher-best vs teacher-worst by default; the PAD release draws a random pair, `pairs: random`) rather
than a reward model's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from baselines.pairs import PairParams, PairwiseMethod, pair_logprobs, preference_metrics
from harness.methods.base import LossOutput, TrainContext


def simpo_loss(mean_chosen: torch.Tensor, mean_rejected: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Per-pair loss [B] from mean (length-normalised) log-probs [B]."""
    return -F.logsigmoid(beta * (mean_chosen - mean_rejected) - gamma)


class SimPOParams(PairParams):
    beta: float = Field(2.0, gt=0)
    """Scale of the length-normalised reward margin."""
    gamma: float = Field(0.5, ge=0)
    """Target reward margin."""


class SimPOMethod(PairwiseMethod):
    """SimPO (Meng et al. 2024): length-normalised margin with beta and gamma, no reference model."""

    name: ClassVar[str] = "simpo"
    Params: ClassVar[type[BaseModel]] = SimPOParams
    params: SimPOParams

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        lp = pair_logprobs(model, batch)
        losses = simpo_loss(lp["mean_chosen"], lp["mean_rejected"], self.params.beta, self.params.gamma)
        margin = lp["mean_chosen"] - lp["mean_rejected"]
        return LossOutput(losses.mean(), {"loss": float(losses.detach().mean()), **preference_metrics(margin)})
