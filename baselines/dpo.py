"""DPO: Direct Preference Optimization (Rafailov et al., 2023), with the IPO (Azar et al., 2023, "A General
Theoretical Paradigm to Understand Learning from Human Preferences") and hinge (SLiC, Zhao et al., 2023)
losses as options.

With h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)] (SUM log-probs):
    sigmoid  -log sigmoid(beta * h)
    ipo      (h_avg - 1 / (2 beta))^2, h_avg = each log-ratio divided by ITS response's token count, as TRL
             defines IPO (its DPOTrainer divides the policy and reference log-probs by the completion length
             for `loss_type="ipo"`; confirmed with the IPO authors per TRL's comment)
    hinge    max(0, 1 - beta * h)
Interpretation made here: the reference model is the initial student, and its sum log-probs are cached
once (`Signal.REFERENCE_LOGPROB`) instead of running a second model during training; the pair is the
teacher-best vs teacher-worst sample by default (see `baselines.pairs`). The reference log-probs must be
scored with the same length limits as training, else the policy and reference sums cover different tokens,
and in the trainer's precision path (fp32 master weights under its autocast, `harness.signals.policy`), else
the log-ratio is not 0 at step 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field

from baselines.dpo_loss import LossType, dpo_loss
from baselines.pairs import PairParams, PairwiseMethod, pair_logprobs, preference_metrics
from harness.methods.base import LossOutput, PromptGroup, Signal, TrainContext


class DPOParams(PairParams):
    beta: float = Field(0.1, gt=0)
    """DPO's beta (the KL strength against the reference)."""
    loss_type: LossType = "sigmoid"
    """`sigmoid` (DPO), `ipo` or `hinge` (SLiC)."""


class DPOMethod(PairwiseMethod):
    """DPO (Rafailov et al. 2023): teacher-ranked pairs, cached initial-student reference (IPO, hinge)."""

    name: ClassVar[str] = "dpo"
    Params: ClassVar[type[BaseModel]] = DPOParams
    params: DPOParams
    extra_signals: ClassVar[frozenset[str]] = frozenset({Signal.REFERENCE_LOGPROB})

    def pair_fields(self, group: PromptGroup, chosen: int, rejected: int) -> dict[str, Any]:
        ref = group.signals[Signal.REFERENCE_LOGPROB]
        return {"ref_chosen": float(ref[chosen]), "ref_rejected": float(ref[rejected])}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        lp = pair_logprobs(model, batch)
        ref_c = batch["ref_chosen"].to(lp["sum_chosen"].device)
        ref_r = batch["ref_rejected"].to(lp["sum_chosen"].device)
        losses = dpo_loss(lp["sum_chosen"], lp["sum_rejected"], ref_c, ref_r, self.params.beta,
                          self.params.loss_type, lp["len_chosen"], lp["len_rejected"])
        h = (lp["sum_chosen"] - ref_c) - (lp["sum_rejected"] - ref_r)
        return LossOutput(losses.mean(), {"loss": float(losses.detach().mean()), **preference_metrics(h)})
