"""Small training ingredients shared by the trainer tests: two tiny methods (token-averaged NLL and a
pairwise log-likelihood margin), a synthetic prompt set and a small budget."""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import Budget
from harness.methods.base import DefaultParams, LossOutput, Method, PromptGroup, TrainContext
from harness.methods.common import nll_loss, pack_sequences, sequence_logprobs


class NLLMethod(Method):
    """SFT-like: token-averaged NLL of the first response."""

    name = "test_nll"
    Params = DefaultParams

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        return [{"messages": g.messages, "response": g.responses[0]} for g in groups]

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        fmt = ctx.formatter
        packed = pack_sequences([fmt.prompt_ids(e["messages"]) for e in examples],
                                [fmt.response_ids(e["response"]) for e in examples],
                                fmt.tokenizer.pad_token_id, ctx.max_length, ctx.max_prompt_length)
        return {"packed": packed, "student_tokens": packed.num_tokens}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        loss = nll_loss(model, batch["packed"])
        return LossOutput(loss, {"nll": float(loss.detach())})


class MarginMethod(Method):
    """Pairwise: softplus(-(mean logp chosen - mean logp rejected)), averaged over examples."""

    name = "test_margin"
    Params = DefaultParams

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        return [{"messages": g.messages, "chosen": g.responses[0], "rejected": g.responses[1]} for g in groups]

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        fmt = ctx.formatter
        prompts = [fmt.prompt_ids(e["messages"]) for e in examples]
        responses = [fmt.response_ids(e["chosen"]) for e in examples] + [fmt.response_ids(e["rejected"])
                                                                          for e in examples]
        packed = pack_sequences(prompts + prompts, responses, fmt.tokenizer.pad_token_id, ctx.max_length,
                                ctx.max_prompt_length)
        return {"packed": packed, "student_tokens": packed.num_tokens, "n": len(examples)}

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        _, mean, _ = sequence_logprobs(model, batch["packed"])
        n = batch["n"]
        margin = mean[:n] - mean[n:]
        return LossOutput(F.softplus(-margin).mean(), {"margin": float(margin.mean().detach())})


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def make_groups(count: int, seed: int = 0, responses: int = 2) -> list[PromptGroup]:
    """`count` prompts of 1-6 random words, each with `responses` random answers of 1-8 words (no signals)."""
    rng = random.Random(seed)
    groups = []
    for i in range(count):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + "?"
        answers = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(responses)]
        groups.append(PromptGroup(f"p{i}", [{"role": "user", "content": prompt}], answers))
    return groups


def budget(**kw: Any) -> Budget:
    base = dict(epochs=2, effective_batch=4, micro_batch=2, max_length=64, max_prompt_length=32,
                learning_rate=1e-3, warmup_ratio=0.25, schedule="cosine")
    return Budget(**{**base, **kw})
