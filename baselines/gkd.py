"""GKD: Generalized Knowledge Distillation (Agarwal et al., 2024, "On-Policy Distillation of Language
Models: Learning from Self-Generated Mistakes").

Per token, the generalized Jensen-Shannon divergence between teacher p and student q,
    JSD(beta)(p || q) = beta KL(p || m) + (1 - beta) KL(q || m),   m = beta p + (1 - beta) q,
with beta = 0 taken as forward KL(p || q) and beta = 1 as reverse KL(q || p) (the limits the GKD paper
and TRL's GKDTrainer use). With probability `lmbda` a micro-batch is ON-POLICY: the student samples a
response to each prompt, the teacher scores it online (its forward tokens counted in the accounting as
`teacher_forward_tokens_online`, the student's sampled tokens as `student_generation_tokens_online`), and
the JSD is taken over the FULL vocabulary. Otherwise the micro-batch uses the prompt's fixed shared
samples with the teacher's cached top-k + tail buckets, exactly like `baselines.kd` (so `lmbda = 0` is
fully offline and needs no teacher during training).
Loss weighting: the mean over the micro-batch's response tokens.
Interpretations made here: the on-policy coin is flipped per micro-batch from a hash of (seed, step,
prompt ids), so a resumed run makes the same choices; the fixed branch compares k + 1 buckets (the
cached signal), the on-policy branch the full distributions (a bucketed JSD is a lower bound of the full).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from baselines.batching import model_device, pad_id, to_device
from baselines.kd import _kl, _log_mix, bucket_logprobs, collate_topk, topk_examples
from harness.methods.base import LossOutput, Method, PromptGroup, Signal, TrainContext
from harness.methods.common import Packed, pack_sequences


def generalized_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-position generalized JSD [N] from log-probs [N, K] (teacher p, student q)."""
    if beta <= 0.0:
        return _kl(teacher, student)
    if beta >= 1.0:
        return _kl(student, teacher)
    mix = _log_mix(teacher, student, beta)
    return beta * _kl(teacher, mix) + (1.0 - beta) * _kl(student, mix)


class GKDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    beta: float = Field(0.5, ge=0.0, le=1.0)
    """The generalized JSD's beta (0: forward KL, 1: reverse KL)."""
    lmbda: float = Field(0.5, ge=0.0, le=1.0)
    """Fraction of micro-batches sampled from the student."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest on-policy student sample, in tokens."""
    temperature: float = Field(1.0, gt=0.0)
    """Temperature of the on-policy student samples."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling of the on-policy student samples."""
    responses: str = Field("all", pattern="^(all|first)$")
    """The fixed (off-policy) branch distils on `all` the prompt's shared samples, or the `first`."""
    seed: int = 0
    """Seed of the on-policy coin and samples (a function of seed, step and prompt ids)."""


def _count(accounting: Any, method: str, attribute: str, tokens: int) -> None:
    """Use the Accounting API when present; plain attributes otherwise (test doubles)."""
    if accounting is None:
        return
    if hasattr(accounting, method):
        getattr(accounting, method)(tokens)
    else:
        setattr(accounting, attribute, getattr(accounting, attribute, 0) + tokens)


def finish_response(ids: list[int], end_of_turn: int, max_new_tokens: int,
                    stop_ids: tuple[int, ...] = (), turn_suffix: tuple[int, ...] = ()) -> list[int]:
    """A sampled response as training tokens: cut at its first stop token and end it with the template's
    turn suffix (`ChatFormatter.turn_suffix_ids`; THE end-of-turn token when none is given) when it stopped
    early, as `ChatFormatter.response_ids` ends a finished response; a response that ran to
    max_new_tokens did not finish and gets no end."""
    ids = list(ids)[:max_new_tokens]
    end = list(turn_suffix) or [end_of_turn]
    stops = {end_of_turn, *stop_ids}
    for t, token in enumerate(ids):
        if token in stops:
            return ids[:t] + end
    if len(ids) < max_new_tokens:
        ids += end  # generators return sequences without their stop token
    return ids or end


class GKDMethod(Method):
    """GKD (Agarwal et al. 2024): on-policy generalized JSD (beta) with student-sampled fraction lambda."""

    name: ClassVar[str] = "gkd"
    Params: ClassVar[type[BaseModel]] = GKDParams
    params: GKDParams
    on_policy: ClassVar[bool] = True
    needs_shared_vocab: ClassVar[bool] = True

    def signals_needed(self) -> frozenset[str]:
        return frozenset({Signal.TEACHER_TOPK}) if self.params.lmbda < 1.0 else frozenset()


    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        if self.params.lmbda < 1.0:
            return topk_examples(groups, self.params.responses)
        return [{"prompt_id": g.prompt_id, "messages": g.messages} for g in groups]

    def _coin(self, examples: list[dict[str, Any]], step: int) -> random.Random:
        ids = ",".join(str(e["prompt_id"]) for e in examples)
        return random.Random(f"gkd|{self.params.seed}|{step}|{ids}")

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        coin = self._coin(examples, ctx.step)
        on_policy = self.params.lmbda >= 1.0 or coin.random() < self.params.lmbda
        if on_policy:
            prompts = [ctx.formatter.prompt_ids(e["messages"], max_length=ctx.max_prompt_length) for e in examples]
            # Student tokens are known only after sampling; `loss` overwrites this with the real count.
            return {"on_policy": True, "messages": [e["messages"] for e in examples], "prompt_ids": prompts,
                    "seed": coin.randrange(2**31), "student_tokens": sum(len(p) for p in prompts)}
        return {"on_policy": False, **collate_topk(examples, ctx)}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        device = model_device(model)
        if not batch["on_policy"]:
            batch = to_device(batch, device)
            packed = batch["packed"]
            logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits[:, :-1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            sel = batch["kd_mask"].bool()
            student, teacher = bucket_logprobs(logprobs[sel], batch["teacher_ids"][sel], batch["teacher_logprobs"][sel])
            jsd = generalized_jsd(student, teacher, self.params.beta).mean()
            return LossOutput(jsd, {"jsd": float(jsd.detach()), "on_policy": 0.0})
        return self._on_policy_loss(model, batch, ctx, device)

    def _sample(self, model: torch.nn.Module, prompts: list[list[int]], max_new: int, seed: int,
                ctx: TrainContext) -> list[list[int]]:
        was_training = model.training
        model.eval()
        try:
            return sample_from_student(model, prompts, max_new, seed, ctx, self.params.temperature, self.params.top_p)
        finally:
            model.train(was_training)

    def _on_policy_loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext,
                        device: torch.device) -> LossOutput:
        if ctx.teacher_loader is None:
            raise RuntimeError("gkd with lmbda > 0 needs ctx.teacher_loader (the trainer passes it to on-policy methods)")
        prompts: list[list[int]] = batch["prompt_ids"]
        eot = ctx.formatter.end_of_turn_id
        max_new = max(1, min(self.params.max_new_tokens, ctx.max_length - max(len(p) for p in prompts)))
        sampled = self._sample(model, prompts, max_new, int(batch["seed"]), ctx)
        responses = [finish_response(r, eot, max_new, ctx.formatter.stop_ids, ctx.formatter.turn_suffix_ids)
                     for r in sampled]
        _count(ctx.accounting, "add_student_generation", "student_generation_tokens_online",
               sum(len(r) for r in sampled))

        student_packed = pack_sequences(prompts, responses, pad_id(ctx), ctx.max_length, ctx.max_prompt_length)
        teacher = ctx.teacher_loader()
        teacher_prompts = [teacher.formatter.prompt_ids(m) for m in batch["messages"]]
        widest = max(len(p) + len(r) for p, r in zip(teacher_prompts, responses, strict=True))
        # The teacher keeps its whole context (its system prompt and demonstrations are the point).
        teacher_packed = pack_sequences(teacher_prompts, responses, pad_id(ctx), widest, widest - 1)
        teacher_logprobs = _teacher_logprobs(teacher, teacher_packed).to(device)
        _count(ctx.accounting, "add_teacher_forward", "teacher_forward_tokens_online", teacher_packed.num_tokens)
        batch["student_tokens"] = student_packed.num_tokens

        student_packed = student_packed.to(device)
        logits = model(input_ids=student_packed.input_ids, attention_mask=student_packed.attention_mask).logits
        student_logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)[student_packed.response_mask[:, 1:].bool()]
        jsd = generalized_jsd(student_logprobs, teacher_logprobs, self.params.beta).mean()
        return LossOutput(jsd, {"jsd": float(jsd.detach()), "on_policy": 1.0,
                                "sampled_tokens": float(sum(len(r) for r in sampled))})


@torch.no_grad()
def _teacher_logprobs(teacher: Any, packed: Packed) -> torch.Tensor:
    """The teacher's full log-softmax at the response positions, flattened row-major [N, V]."""
    packed = packed.to(teacher.device)
    logits = teacher.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits[:, :-1]
    return torch.log_softmax(logits.float(), dim=-1)[packed.response_mask[:, 1:].bool()]


def sample_from_student(model: torch.nn.Module, prompts: list[list[int]], max_new: int, seed: int, ctx: TrainContext,
                        temperature: float, top_p: float) -> list[list[int]]:
    """Sample one response per prompt from the live student through `ctx.generator`, the configured
    backend's live sampler (`Generator.live_sampler`: hf builds around the live weights, vllm syncs them
    into its engine), or with plain `model.generate`, one prompt at a time, when there is none."""
    if ctx.generator is not None:
        return [list(r) for r in ctx.generator(model, prompts, max_new, seed, temperature=temperature, top_p=top_p)]
    out = []
    device = model_device(model)
    for i, prompt in enumerate(prompts):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + i)
            ids = torch.tensor([prompt], device=device)
            seq = model.generate(  # type: ignore[operator]
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=temperature, top_p=top_p, max_new_tokens=max_new,
                                 pad_token_id=pad_id(ctx), eos_token_id=list(ctx.formatter.stop_ids))
        out.append(seq[0, len(prompt):].tolist())
    return out
