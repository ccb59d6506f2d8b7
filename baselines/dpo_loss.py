"""DPO's loss as a pure tensor function (torch only), so that code without pydantic can run the exact math
`baselines.dpo.DPOMethod` trains with (e.g. the GPU check, tests/gpu/check.py). See `baselines.dpo` for the
method, its reference model and the definitions of the three losses."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossType = Literal["sigmoid", "ipo", "hinge"]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, loss_type: LossType = "sigmoid",
             chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss [B] from SUM log-probs [B] of the policy and the reference; IPO also needs each
    response's token count [B]."""
    h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h)
    if loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the IPO loss needs the token counts of the chosen and rejected responses")
        h_avg = ((policy_chosen - reference_chosen) / chosen_tokens.clamp_min(1)
                 - (policy_rejected - reference_rejected) / rejected_tokens.clamp_min(1))
        return (h_avg - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1.0 - beta * h)
    raise ValueError(f"unknown DPO loss type {loss_type!r}")


__all__ = ["LossType", "dpo_loss"]
