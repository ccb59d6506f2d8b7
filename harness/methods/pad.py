"""PAD: Preference-Aligned Distillation (Gu et al. 2025, arXiv 2502.14272), as a `Method` plugin.

Why this method: instead of a pairwise "A beats B" signal, PAD distils the teacher's whole preference
distribution over rankings of n sampled responses, so the student also learns HOW MUCH better one
response is. Rewards are length-normalised log-likelihoods (the paper shows a LM is a reward function):
  student  s_i = beta * mean log p_student(y_i | x)            (no reference model)
  teacher  t_i = beta * [alpha * mean log p_teacher(y_i | x) + (1 - alpha) * log m_i]
with m_i the teacher's average pairwise MCQ win probability of response i against the other n-1. The
released run used alpha = 0, beta = 10 (the defaults); the paper's text motivates alpha = 1.
The losses themselves (Plackett-Luce distributions, PPD/VPD/KL, the released code's batch-coupled JSD,
and the decomposition for large n) are pure tensor functions in `harness.methods.pad_loss`.

Loss weighting: the mean over the micro-batch's prompts (each prompt's divergence counts once, whatever
its response lengths); the released trainer weights micro-batches by their response tokens instead.

Metrics: `pad_jsd` is the mean per-example JSD(P_T, P_S) in nats and `pad_agreement` = 1 - pad_jsd / ln 2,
in [0, 1] (1: identical ranking distributions; 0: disjoint supports). Both are computed on the same
support as the loss: exact for n <= exact_max_n, else the top-k marginals or the sampled (unbiased,
noisy, clamped to [0, 1] for the agreement) estimate; they always use the textbook JSD, also under
`reference_code_compat`.
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.methods.base import LossOutput, Method, PromptGroup, Signal, TrainContext, TrainCurve
from harness.methods.common import Packed, fit_group, pack_sequences, score_arithmetic
from harness.methods.pad_loss import (
    RankingSupport,
    jensen_shannon,
    pad_loss,
    pad_loss_and_jsd,
    plackett_luce_log_probs,
    plackett_luce_prefix_log_probs,
)
from harness.methods.shared_prompt import GroupPacked, pack_groups

# m_i = 0 would make log m_i = -inf and every ranking probability NaN; an MCQ probability this small
# already means "never preferred", so flooring it changes no ranking the teacher expresses.
MIN_WIN_PROB = 1e-6


def teacher_scores(group: PromptGroup, beta: float, alpha: float) -> list[float]:
    """t_i = beta * [alpha * mean log p_teacher(y_i) + (1 - alpha) * log m_i]; a term with weight 0 is
    skipped, so its signal need not exist."""
    n = len(group.responses)
    total = [0.0] * n
    if alpha > 0:
        avg = group.signals[Signal.TEACHER_AVG_LOGPROB]
        total = [total[i] + alpha * float(avg[i]) for i in range(n)]
    if alpha < 1:
        wins = group.mcq_win_prob()
        total = [total[i] + (1 - alpha) * math.log(max(float(wins[i]), MIN_WIN_PROB)) for i in range(n)]
    return [beta * x for x in total]


def student_scores(mean_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """s_i = beta * mean log p_student(y_i | x)."""
    return beta * mean_logprobs


def released_bf16_scores(rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * rewards as the released run computed them: the rewards cast to bf16 (the HF Trainer casts float
    inputs to a DeepSpeed engine's dtype), then multiplied by beta in bf16."""
    return beta * rewards.to(torch.bfloat16)


def keep_group(group: PromptGroup) -> bool:
    """The reference pipeline's filter: some response wins its MCQ comparisons (m_i > 0.5) and some does
    not (m_i <= 0.5), i.e. the teacher expresses a preference at all."""
    wins = group.mcq_win_prob()
    return any(m > 0.5 for m in wins) and any(m <= 0.5 for m in wins)


class PADParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    beta: float = Field(10.0, gt=0)
    """Plackett-Luce scale beta on the rewards (teacher and student): s_i = beta x mean log p(y_i | x)."""
    alpha: float = Field(0.0, ge=0, le=1)
    """The teacher reward's mix: alpha x its mean log-prob + (1 - alpha) x log of its MCQ win probability (0:
    MCQ only, as released)."""
    kind: Literal["ppd", "vpd", "kl", "reverse_kl"] = "ppd"
    """The divergence between the teacher's and the student's ranking distributions: `ppd` (the paper's JSD),
    `vpd`, `kl`, `reverse_kl` (harness.methods.pad_loss)."""
    reference_code_compat: bool = False
    """The released code's batch-coupled JSD (kind="ppd" only)."""
    mcq_filter: bool = True
    """Keep prompts where some m_i > 0.5 and some <= 0.5."""
    exact_max_n: int = Field(8, ge=1, le=9)
    """Enumerate all n! rankings up to this n (9! = 362880)."""
    decomposition: Literal["topk", "sampled"] = "topk"
    """How the ranking distributions are taken when n > exact_max_n: top-k Plackett-Luce marginals or
    sampled rankings."""
    topk: int | None = Field(None, ge=1)
    """Plackett-Luce stages kept; default: most under max_prefixes."""
    max_prefixes: int = Field(4096, ge=1)
    """The top-k decomposition keeps at most this many ranking prefixes (when `topk` is unset)."""
    num_samples: int = Field(256, ge=2)
    """Sampled rankings per example (half teacher, half student)."""
    seed: int = 0
    """For the sampled decomposition: rankings are a function of (seed, step)."""
    score_precision: Literal["fp32", "bf16_as_released"] = "fp32"
    """The arithmetic from the student's logits to the loss: fp32 (default), or rounded as the released run's
    bf16 DeepSpeed engine computed it (module docstring)."""

    @model_validator(mode="after")
    def _compat_is_ppd(self) -> PADParams:
        if self.reference_code_compat and self.kind != "ppd":
            raise ValueError("reference_code_compat reproduces the released PPD loss; it needs kind: ppd")
        return self

    def support(self) -> RankingSupport:
        return RankingSupport(
            self.exact_max_n, self.decomposition, self.topk, self.max_prefixes, self.num_samples
        )


class PADMethod(Method):
    """Preference-Aligned Distillation (arXiv 2502.14272); see the module docstring."""

    name = "pad"
    Params = PADParams
    required_signals = frozenset({Signal.MCQ_PREFERENCE})
    filter_params = ("mcq_filter",)  # the filter reads the MCQ signal (in the key) and this switch only
    proposed = True  # the method this harness studies: reports test it against the best baseline
    train_curve = TrainCurve("pad_agreement", "PAD preference-distribution agreement (student vs teacher)",
                             "agreement")
    params: PADParams

    def signals_needed(self) -> frozenset[str]:
        """MCQ preferences when alpha < 1 (the teacher score) or when the MCQ filter is on; teacher mean
        log-probs when alpha > 0."""
        needed = set()
        if self.params.alpha < 1 or self.params.mcq_filter:
            needed.add(Signal.MCQ_PREFERENCE)
        if self.params.alpha > 0:
            needed.add(Signal.TEACHER_AVG_LOGPROB)
        return frozenset(needed)

    def filter_groups(self, groups: list[PromptGroup]) -> list[PromptGroup]:
        if not self.params.mcq_filter:
            return groups
        return [g for g in groups if keep_group(g)]

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        return [
            {
                "prompt_id": g.prompt_id,
                "messages": g.messages,
                "responses": list(g.responses),
                "finished": g.finished_flags(),
                "teacher_scores": teacher_scores(g, self.params.beta, self.params.alpha),
                # bf16_as_released rounds the unscaled teacher scores, as the released Trainer cast its inputs
                **({"teacher_rewards": teacher_scores(g, 1.0, self.params.alpha)} if self._bf16 else {}),
            }
            for g in groups
        ]

    @property
    def _bf16(self) -> bool:
        return self.params.score_precision == "bf16_as_released"

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        sizes = {len(ex["responses"]) for ex in examples}
        if len(sizes) != 1:
            raise ValueError(
                f"PAD needs the same number of responses per prompt in a batch; got {sorted(sizes)}"
            )
        n = sizes.pop()
        if n < 2:
            raise ValueError("PAD needs at least 2 responses per prompt to form a ranking")
        fmt = ctx.formatter
        prompts, responses = [], []
        for ex in examples:  # the example's responses are the prompt's whole group: cut together
            prompt, cut = fit_group(fmt.prompt_ids(ex["messages"]),
                                    [fmt.response_ids(r, max_length=ctx.max_length, finished=done)
                                     for r, done in zip(ex["responses"], ex.get("finished") or [True] * n, strict=True)],
                                    ctx.max_length, ctx.max_prompt_length, ctx.truncation)
            prompts.append(prompt)
            responses.append(cut)
        pad_id = fmt.pad_id
        packed: Packed | GroupPacked
        if ctx.share_prompts:  # the prompt runs once for its n responses (same log-probs, fewer tokens)
            packed = pack_groups(prompts, responses, pad_id, ctx.max_length, ctx.max_prompt_length, fitted=True)
        else:
            packed = pack_sequences([p for p, rs in zip(prompts, responses, strict=True) for _ in rs],
                                    [r for rs in responses for r in rs], pad_id, ctx.max_length,
                                    ctx.max_prompt_length, fitted=True)
        extra = {}
        if self._bf16:
            rewards = torch.tensor([ex["teacher_rewards"] for ex in examples], dtype=torch.float32)
            extra["teacher_scores_bf16"] = released_bf16_scores(rewards, self.params.beta)
        return {
            **extra,
            "packed": packed,
            "teacher_scores": torch.tensor([ex["teacher_scores"] for ex in examples], dtype=torch.float32),
            "n": n,
            "student_tokens": packed.num_tokens,
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        device = next(model.parameters()).device
        packed = batch["packed"].to(device)
        score_dtype = torch.bfloat16 if self._bf16 else torch.float32
        teacher = batch["teacher_scores_bf16" if self._bf16 else "teacher_scores"].to(device)
        _, mean_logprobs, _ = packed.sequence_logprobs(model, score_dtype)
        generator = None
        if self.params.decomposition == "sampled":
            generator = torch.Generator().manual_seed(zlib.crc32(f"{self.params.seed}:{ctx.step}".encode()))
        with score_arithmetic(score_dtype, device):
            student = student_scores(mean_logprobs.to(score_dtype).view(teacher.shape), self.params.beta)
            loss, jsd = pad_loss_and_jsd(
                student,
                teacher,
                self.params.kind,
                self.params.reference_code_compat,
                self.params.support(),
                generator,
            )
        mean_jsd = float(jsd.mean())
        top1 = (student.detach().argmax(-1) == teacher.argmax(-1)).float().mean()
        return LossOutput(
            loss,
            {
                "loss": float(loss.detach()),
                "pad_jsd": mean_jsd,
                "pad_agreement": min(1.0, max(0.0, 1.0 - mean_jsd / math.log(2.0))),
                "pad_top1_match": float(top1),
                "student_score_mean": float(student.detach().mean()),
            },
        )


__all__ = [
    "PADMethod",
    "PADParams",
    "RankingSupport",
    "jensen_shannon",
    "keep_group",
    "pad_loss",
    "pad_loss_and_jsd",
    "plackett_luce_log_probs",
    "plackett_luce_prefix_log_probs",
    "student_scores",
    "teacher_scores",
]
