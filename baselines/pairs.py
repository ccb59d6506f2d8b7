"""Pair selection shared by every pairwise baseline (dpo, simpo, dpkd, plad) and by sft.

Every pairwise method takes its pair from the SAME samples and the SAME teacher judgement PAD uses:
  - `preference: mcq` (default) ranks responses by their average pairwise MCQ win probability under the
    teacher (`Signal.MCQ_PREFERENCE`); `preference: teacher_logprob` ranks by the teacher's mean
    log-probability (`Signal.TEACHER_AVG_LOGPROB`).
  - `pairs: best_worst` (default): chosen = teacher-best, rejected = teacher-worst.
  - `pairs: random`: a uniformly random pair, ordered by the teacher's judgement (what the released PAD
    baselines did, with MCQ scores). The draw depends only on (`pair_seed`, prompt id), so every method
    with the same settings gets the same pair for a prompt, whatever the training seed or data order.
Ties keep the lower response index first (a stable sort), so selection is deterministic.
Loss weighting (every pairwise method): the mean over the micro-batch's pairs, one pair per prompt.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from baselines.batching import (
    encode_group,
    example_group,
    group_fields,
    model_device,
    pack_encoded,
    pack_pair_groups,
)
from harness.methods.base import Method, PromptGroup, Signal, TrainContext
from harness.methods.common import Packed
from harness.methods.shared_prompt import GroupPacked

Preference = Literal["mcq", "teacher_logprob"]
PairStrategy = Literal["best_worst", "random"]


class PairParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    preference: Preference = "mcq"
    """How the teacher ranks a prompt's responses: `mcq` (its MCQ win probability) or `teacher_logprob` (its
    mean log-prob)."""
    pairs: PairStrategy = "best_worst"
    """Which pair of responses: `best_worst` (teacher-best vs teacher-worst) or `random` (a random pair
    ordered by the teacher, as released)."""
    pair_seed: int = 0
    """Seed of the random pairs: a prompt's pair depends only on (pair_seed, prompt id)."""


def preference_signal(preference: Preference) -> str:
    return Signal.MCQ_PREFERENCE if preference == "mcq" else Signal.TEACHER_AVG_LOGPROB


def teacher_scores(group: PromptGroup, preference: Preference) -> list[float]:
    """Higher = better by the teacher. Reads exactly the signal named by `preference`."""
    if preference == "mcq":
        return [float(x) for x in group.mcq_win_prob()]
    return [float(x) for x in group.signals[Signal.TEACHER_AVG_LOGPROB]]


def ranking(scores: list[float]) -> list[int]:
    """Indices from best to worst; ties keep the lower index first."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def select_pair(scores: list[float], strategy: PairStrategy, rng: random.Random) -> tuple[int, int]:
    """(chosen, rejected) response indices."""
    if len(scores) < 2:
        raise ValueError("a preference pair needs at least 2 responses per prompt")
    order = ranking(scores)
    if strategy == "best_worst":
        return order[0], order[-1]
    i, j = rng.sample(range(len(scores)), 2)
    position = {idx: pos for pos, idx in enumerate(order)}
    return (i, j) if position[i] < position[j] else (j, i)


def pair_rng(pair_seed: int, prompt_id: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so this is stable across processes.
    return random.Random(f"pairs|{pair_seed}|{prompt_id}")


def select_group_pair(group: PromptGroup, params: PairParams) -> tuple[int, int]:
    scores = teacher_scores(group, params.preference)
    return select_pair(scores, params.pairs, pair_rng(params.pair_seed, group.prompt_id))


def preferred_index(group: PromptGroup, preference: Preference) -> int:
    return ranking(teacher_scores(group, preference))[0]


class PairwiseMethod(Method):
    """Shared plumbing for methods trained on one (chosen, rejected) pair per prompt.

    Examples carry the pair's text; `collate` packs the chosen responses, then the rejected ones, into one
    batch so the student runs ONE forward pass per micro-batch; subclasses add per-pair fields with
    `pair_fields` and write the loss on the four log-likelihood vectors from `pair_logprobs`.
    """

    Params: ClassVar[type[BaseModel]] = PairParams
    params: PairParams
    extra_signals: ClassVar[frozenset[str]] = frozenset()

    def signals_needed(self) -> frozenset[str]:
        return frozenset({preference_signal(self.params.preference)}) | self.extra_signals

    def pair_fields(self, group: PromptGroup, chosen: int, rejected: int) -> dict[str, Any]:
        return {}

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        examples = []
        for group in groups:
            chosen, rejected = select_group_pair(group, self.params)
            finished = group.finished_flags()
            examples.append({
                "prompt_id": group.prompt_id, "messages": group.messages,
                "chosen": group.responses[chosen], "rejected": group.responses[rejected],
                "chosen_index": chosen, "rejected_index": rejected,
                "chosen_finished": finished[chosen], "rejected_finished": finished[rejected],
                **group_fields(group), **self.pair_fields(group, chosen, rejected),
            })
        return examples

    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        encoded = []
        for e in examples:  # both cut as the prompt's whole sampled group is (batching.example_group)
            group, keep = example_group(e, [e["chosen"], e["rejected"]],
                                        [e.get("chosen_finished", True), e.get("rejected_finished", True)],
                                        [e.get("chosen_index", 0), e.get("rejected_index", 1)])
            prompt, (chosen, rejected) = encode_group(ctx, e["messages"], group, keep)
            encoded.append((prompt, chosen, rejected))
        packed: Packed | GroupPacked
        if ctx.share_prompts:  # chosen and rejected share one prompt encoding; same layout of results
            packed = pack_pair_groups(ctx, encoded)
        else:
            packed = pack_encoded(ctx, [(p, c) for p, c, _ in encoded] + [(p, r) for p, _, r in encoded])
        batch: dict[str, Any] = {"packed": packed, "num_pairs": len(examples), "student_tokens": packed.num_tokens}
        for key in examples[0]:
            if key.startswith("ref_") or key.startswith("teacher_"):
                batch[key] = torch.tensor([float(e[key]) for e in examples], dtype=torch.float32)
        return batch


def pair_logprobs(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Sum and mean (length-normalised) response log-likelihoods of the chosen and rejected halves."""
    packed: Packed | GroupPacked = batch["packed"].to(model_device(model))
    total, mean, count = packed.sequence_logprobs(model)
    b = int(batch["num_pairs"])
    return {"sum_chosen": total[:b], "sum_rejected": total[b:], "mean_chosen": mean[:b], "mean_rejected": mean[b:],
            "len_chosen": count[:b], "len_rejected": count[b:]}


def preference_metrics(margin: torch.Tensor) -> dict[str, float]:
    return {"margin": float(margin.detach().mean()), "pair_accuracy": float((margin.detach() > 0).float().mean())}
