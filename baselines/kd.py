"""KD: token-level knowledge distillation on fixed responses from the teacher's top-k log-probs.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": match the student's
next-token distribution to the teacher's at every response token (forward KL by default). Options:
reverse KL, and the alpha-skew KL / skew reverse KL of DistiLLM (Ko et al., 2024, "DistiLLM: Towards
Streamlined Distillation for Large Language Models"):
    skew_kl          KL(p || alpha p + (1 - alpha) q)
    skew_reverse_kl  KL(q || (1 - alpha) p + alpha q)
with p the teacher and q the student.

Interpretation made here: the teacher's distribution is only stored as its top-k log-probs per token
(`Signal.TEACHER_TOPK`, computed once and shared), so both distributions are compared over k + 1
buckets: the teacher's k token ids plus ONE tail bucket holding the remaining mass
    teacher tail = log(1 - sum_k exp(teacher top-k log-probs))
    student tail = log(1 - sum of the student's probabilities on those k ids)
(the student's tail is computed as a log-sum-exp over the other ids, which is exact and stable). Both
tails are floored at `TAIL_FLOOR` so a teacher whose top-k holds all its mass gives finite values. The
responses are the prompt's shared samples (all n by default). Loss = mean divergence over response tokens
+ `nll_weight` x token-averaged NLL (loss weighting: per response token of the micro-batch). Teacher and
student must share a vocabulary (checked before training). The released PAD baseline (`kd_trainer.py`) is
`divergence: reverse_kl` (its KLDivLoss(teacher, student) computes KL(student || teacher)) with
`nll_weight: 1` over the teacher's top-100 (`signals.topk: 100`).
"""

from __future__ import annotations

import math
import random
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from baselines.batching import encode_example, group_fields, model_device, pad_id, to_device
from baselines.sft import nll_from_token_logprobs
from harness.methods.base import LossOutput, Method, PromptGroup, Signal, TrainContext
from harness.methods.common import pack_sequences

Divergence = Literal["forward_kl", "reverse_kl", "skew_kl", "skew_reverse_kl"]
TAIL_FLOOR = 1e-10  # smallest tail probability; keeps log(tail) finite when top-k holds all the mass


def bucket_logprobs(student_logprobs: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
                    tail_floor: float = TAIL_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapse full student log-probs [N, V] and teacher top-k [N, k] to (student, teacher) [N, k + 1].

    Bucket j < k is token `teacher_ids[:, j]`; bucket k is everything else.
    """
    student_topk = student_logprobs.gather(-1, teacher_ids)
    others = student_logprobs.scatter(-1, teacher_ids, float("-inf"))
    log_floor = math.log(tail_floor)
    student_tail = torch.logsumexp(others, dim=-1).clamp_min(log_floor)
    teacher_logprobs = teacher_logprobs.to(student_logprobs.dtype)
    teacher_mass = teacher_logprobs.exp().sum(-1)
    teacher_tail = torch.log((1.0 - teacher_mass).clamp_min(tail_floor))
    student = torch.cat([student_topk, student_tail.unsqueeze(-1)], dim=-1)
    teacher = torch.cat([teacher_logprobs, teacher_tail.unsqueeze(-1)], dim=-1)
    return student, teacher


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(weight_a * a + (1 - weight_a) * b), stable."""
    if weight_a <= 0.0:
        return log_b
    if weight_a >= 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def token_divergence(student: torch.Tensor, teacher: torch.Tensor, kind: Divergence = "forward_kl",
                     alpha: float = 0.1) -> torch.Tensor:
    """Per-position divergence [N] between teacher p and student q, both given as log-probs [N, K]."""
    if kind == "forward_kl":
        return _kl(teacher, student)
    if kind == "reverse_kl":
        return _kl(student, teacher)
    if kind == "skew_kl":
        return _kl(teacher, _log_mix(teacher, student, alpha))
    if kind == "skew_reverse_kl":
        return _kl(student, _log_mix(teacher, student, 1.0 - alpha))
    raise ValueError(f"unknown divergence {kind!r}")


def topk_kd_loss(student_logprobs: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
                 kind: Divergence = "forward_kl", alpha: float = 0.1) -> torch.Tensor:
    """Mean over positions of the bucketed divergence; inputs [N, V], [N, k], [N, k]."""
    student, teacher = bucket_logprobs(student_logprobs, teacher_ids, teacher_logprobs)
    return token_divergence(student, teacher, kind, alpha).mean()


class KDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    divergence: Divergence = "forward_kl"
    """Token-level divergence: forward KL (Hinton et al.), reverse KL, or DistiLLM's skew KL / skew reverse
    KL."""
    alpha: float = Field(0.1, ge=0.0, le=1.0)
    """DistiLLM skew; used by skew_kl and skew_reverse_kl only."""
    nll_weight: float = Field(0.0, ge=0.0)
    """Weight of the responses' token NLL added to the loss (0: off)."""
    responses: Literal["all", "first"] = "all"
    """Which shared samples of each prompt to distil on."""


def collate_topk(examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
    """Pack every (prompt, response) and lay the teacher's top-k on the positions that predict each
    response token: position p-1+t (in the shifted [B, L-1] layout) predicts response token t."""
    prompts, responses, topk = [], [], []
    for e in examples:
        p, cut = encode_example(ctx, e)  # cut as the teacher's top-k were scored: with the whole sampled group
        for r, ids, logps in zip(cut, e["topk_ids"], e["topk_logprobs"], strict=True):
            prompts.append(p)
            responses.append(r)
            topk.append((torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(logps, dtype=torch.float32)))
    packed = pack_sequences(prompts, responses, pad_id(ctx), ctx.max_length, ctx.max_prompt_length, fitted=True)
    batch_size, width = packed.input_ids.shape
    k = topk[0][0].shape[-1]
    teacher_ids = torch.zeros((batch_size, width - 1, k), dtype=torch.long)
    teacher_logprobs = torch.full((batch_size, width - 1, k), -1e4, dtype=torch.float32)
    kd_mask = torch.zeros((batch_size, width - 1), dtype=torch.float32)
    for i, (p, r, (ids, logps)) in enumerate(zip(prompts, responses, topk, strict=True)):
        # The signal covers the response as scored; the budget may have cut it shorter here.
        t = min(len(r), ids.shape[0])
        start = len(p) - 1
        teacher_ids[i, start : start + t] = ids[:t]
        teacher_logprobs[i, start : start + t] = logps[:t]
        kd_mask[i, start : start + t] = 1.0
    return {"packed": packed, "teacher_ids": teacher_ids, "teacher_logprobs": teacher_logprobs,
            "kd_mask": kd_mask, "student_tokens": packed.num_tokens}


def topk_examples(groups: list[PromptGroup], which: str) -> list[dict[str, Any]]:
    examples = []
    for g in groups:
        topk = g.signals[Signal.TEACHER_TOPK]
        keep = range(len(g.responses)) if which == "all" else range(1)
        finished = g.finished_flags()
        examples.append({"prompt_id": g.prompt_id, "messages": g.messages,
                         "responses": [g.responses[i] for i in keep],
                         "finished": [finished[i] for i in keep],
                         "response_indices": list(keep), **group_fields(g),
                         "topk_ids": [topk["ids"][i] for i in keep],
                         "topk_logprobs": [topk["logprobs"][i] for i in keep]})
    return examples


def kd_batch_loss(student_logprobs_full: torch.Tensor, response_mask: torch.Tensor, batch: dict[str, Any],
                  kind: Divergence, alpha: float, nll_weight: float) -> LossOutput:
    """KD (+ NLL) from the student's full log-softmax [B, L-1, V] over a collated top-k batch."""
    sel = batch["kd_mask"].bool()
    student, teacher = bucket_logprobs(student_logprobs_full[sel], batch["teacher_ids"][sel],
                                       batch["teacher_logprobs"][sel])
    kd = token_divergence(student, teacher, kind, alpha).mean()
    metrics = {"kd": float(kd.detach()), "teacher_tail_mass": float(teacher[:, -1].exp().mean())}
    loss = kd
    if nll_weight > 0:
        targets = batch["packed"].input_ids[:, 1:].unsqueeze(-1)
        nll = nll_from_token_logprobs(student_logprobs_full.gather(-1, targets).squeeze(-1), response_mask)
        loss = loss + nll_weight * nll
        metrics["nll"] = float(nll.detach())
    return LossOutput(loss, metrics)


class KDMethod(Method):
    """KD (Hinton et al. 2015): token-level KL to the teacher's top-k + tail on fixed responses."""

    name: ClassVar[str] = "kd"
    Params: ClassVar[type[BaseModel]] = KDParams
    params: KDParams
    required_signals: ClassVar[frozenset[str]] = frozenset({Signal.TEACHER_TOPK})
    needs_shared_vocab: ClassVar[bool] = True


    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        return topk_examples(groups, self.params.responses)

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        return collate_topk(examples, ctx)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        batch = to_device(batch, model_device(model))
        packed = batch["packed"]
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits[:, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        p = self.params
        return kd_batch_loss(logprobs, packed.response_mask[:, 1:].float(), batch, p.divergence, p.alpha,
                             p.nll_weight)
