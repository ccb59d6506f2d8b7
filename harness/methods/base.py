"""The `Method` interface: what every distillation method (built-in or plugin) implements.

A method
  1. declares the shared signals it needs (`required_signals`), which the pipeline computes once and
     shares with every other method that needs them;
  2. turns the shared samples + signals into training examples, exactly ONE per prompt, so that the
     matched budget (prompts per optimizer step) means the same thing for every method;
  3. collates examples into tensors and computes `loss(model, batch, ctx)`.
It never touches the optimizer, the model's placement or checkpointing: that is the `Trainer`'s job (its
`loss` moves its own batch to the model's device, the only device work a method does).
Losses live in pure tensor functions next to the method, tested on hand-made tensors.

Loss weighting: `loss` returns the mean over its micro-batch, and the trainer gives every micro-batch of
a step the same weight (they hold the same number of prompts), so the step's gradient is the mean over
its micro-batches. Each method's docstring says what it averages over inside a micro-batch: prompts
(PAD, the pairwise methods) or response tokens (SFT, SeqKD, KD, GKD). The released PAD trainer differs:
it weights each micro-batch by its number of response tokens (`num_items_in_batch`), so long responses
count more there.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from harness.config import Truncation


class Signal:
    """Names of the shared signals (each computed once per (model, data), cached, shared)."""

    TEACHER_AVG_LOGPROB = "teacher_avg_logprob"  # [n] mean log p_teacher(y_i | teacher context + x)
    STUDENT_AVG_LOGPROB = "student_avg_logprob"  # [n] mean log p_student0(y_i | x), the initial student
    REFERENCE_LOGPROB = "reference_logprob"  # [n] SUM log p_ref(y_i | x), ref = initial student (DPO)
    MCQ_PREFERENCE = "mcq_preference"  # [n, n] what the teacher gives i against j (signals.mcq rule)
    TEACHER_TOPK = "teacher_topk"  # per response token: top-k teacher ids and log-probs (+ tail mass)
    TEACHER_SAMPLES = "teacher_samples"  # responses the teacher generated itself (SeqKD)

    ALL = (
        TEACHER_AVG_LOGPROB,
        STUDENT_AVG_LOGPROB,
        REFERENCE_LOGPROB,
        MCQ_PREFERENCE,
        TEACHER_TOPK,
        TEACHER_SAMPLES,
    )


@dataclass
class PromptGroup:
    """One training prompt with its n sampled responses and the signals computed for them.

    `messages` is the conversation as the STUDENT sees it (no teacher context). `signals` maps a
    `Signal` name to its per-prompt value: lists for [n] / [n, n] signals; for `teacher_topk` a dict
    {"ids": [LongTensor[T_i, k]] * n, "logprobs": [FloatTensor[T_i, k]] * n} where T_i is the number of
    response tokens of response i (its `ChatFormatter.response_ids`, end-of-turn included), position t
    holding the teacher's top-k next-token log-probs for predicting response token t; and for
    `teacher_samples` {"responses": [str, ...], "finished": [bool, ...]} (the teacher's own generations). `mcq_win_prob` (the average pairwise MCQ win
    probability of each response, [n]) is derived from `mcq_preference` when present.
    """

    prompt_id: str
    messages: list[dict[str, str]]
    responses: list[str]
    signals: dict[str, Any] = field(default_factory=dict)
    # Per response: did it end with an end-of-turn (True) or was it cut at max_new_tokens (False)? A cut
    # response is trained and scored WITHOUT an end token (ChatFormatter.response_ids). None: all finished.
    finished: list[bool] | None = None

    def finished_flags(self) -> list[bool]:
        return list(self.finished) if self.finished is not None else [True] * len(self.responses)

    def mcq_win_prob(self) -> list[float]:
        pref = self.signals[Signal.MCQ_PREFERENCE]
        n = len(pref)
        return [sum(pref[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]

    def teacher_ranking(self) -> list[int]:
        """Response indices from teacher-best to teacher-worst (MCQ win prob, then teacher log-prob)."""
        if Signal.MCQ_PREFERENCE in self.signals:
            key = self.mcq_win_prob()
        else:
            key = self.signals[Signal.TEACHER_AVG_LOGPROB]
        return sorted(range(len(self.responses)), key=lambda i: -key[i])


@dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainCurve:
    """A metric of the training log (`LossOutput.metrics`, per step) that the report draws as a curve."""

    metric: str  # the train-log key
    title: str  # the chart's title
    axis_label: str  # its y axis


@dataclass
class TrainContext:
    """What a method may use during training besides the student: the tokenizer/formatter, and for
    on-policy methods lazy access to the teacher and a sampler. The accounting object counts teacher
    work done online; student tokens are counted by the trainer from `batch['student_tokens']`."""

    formatter: Any  # harness.models.chat.ChatFormatter for the student
    max_length: int
    max_prompt_length: int
    accounting: Any = None  # harness.training.accounting.Accounting
    teacher_loader: Any = None  # () -> LoadedModel, lazy (on-policy methods only)
    # On-policy sampling (Generator.live_sampler): callable(model, prompt_ids_list, max_new_tokens, seed,
    # temperature=, top_p=) -> one list of token ids per prompt.
    generator: Any = None
    rng: random.Random = field(default_factory=random.Random)
    step: int = 0
    # The student takes `shared_prompt.pack_groups` batches (one prompt encoding for all its responses);
    # the trainer sets it from the model. Methods that score several responses per prompt may use it.
    share_prompts: bool = False
    # How a prompt and its sampled responses are cut to the lengths (`budget.truncation`,
    # harness.methods.common.fit_group): the group is every response sampled for the prompt.
    truncation: Truncation = "per_response"


class Method(ABC):
    """Base class for a distillation method. Subclasses set `name`, `Params`, `required_signals`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]]
    required_signals: ClassVar[frozenset[str]] = frozenset()
    on_policy: ClassVar[bool] = False  # generates from the student during training
    # The params `filter_groups` reads, to keep the shared training set's cache key narrow (changing
    # another param then re-trains only this method). None: every param counts (the safe default).
    filter_params: ClassVar[tuple[str, ...] | None] = None
    needs_shared_vocab: ClassVar[bool] = False  # compares teacher and student token distributions
    # The method under study: the report compares it with the best of the others (the baselines) rather
    # than counting it among them (`pad-harness report --proposed` overrides this per report).
    proposed: ClassVar[bool] = False
    # A per-step training metric (logged by `loss`) the report plots over optimizer steps, if any.
    train_curve: ClassVar[TrainCurve | None] = None

    def __init__(self, params: BaseModel | dict[str, Any] | None = None) -> None:
        if params is None or isinstance(params, dict):
            params = self.Params.model_validate(params or {})
        self.params = params

    def signals_needed(self) -> frozenset[str]:
        """May depend on params (e.g. PAD with alpha > 0 also needs teacher log-probs)."""
        return self.required_signals

    def filter_groups(self, groups: list[PromptGroup]) -> list[PromptGroup]:
        """Prompts this method can learn from; the pipeline intersects this over all methods so every
        method trains on the SAME prompts (the matched budget)."""
        return groups

    def filter_identity(self) -> dict[str, Any] | None:
        """This method's part of the shared training set's cache key: None when it keeps every prompt
        (it does not override `filter_groups`), else its name and the params its filter reads (all of
        them unless `filter_params` narrows it). Derived, not declared: a filter cannot be left out."""
        if type(self).filter_groups is Method.filter_groups:
            return None
        params = self.params.model_dump(mode="json")
        if self.filter_params is not None:
            unknown = sorted(set(self.filter_params) - set(params))
            if unknown:
                raise TypeError(f"method {self.name!r}: filter_params names unknown params {unknown}")
            params = {name: params[name] for name in self.filter_params}
        return {"method": f"{type(self).__module__}.{type(self).__qualname__}", "params": params}

    def check_models(self, teacher: Any, student: Any) -> None:
        """Fail early (before any training) when this method cannot work with these models; by default the
        shared-vocabulary check of a method that declares `needs_shared_vocab`."""
        if self.needs_shared_vocab:
            from harness.methods.vocab import require_shared_vocab

            require_shared_vocab(self.name, teacher, student)

    def checks_models(self) -> bool:
        """Whether `check_models` checks anything (the run loads both models early only then)."""
        return self.needs_shared_vocab or type(self).check_models is not Method.check_models

    @abstractmethod
    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        """Exactly one example per prompt group, in the same order."""

    @abstractmethod
    def collate(self, examples: list[dict[str, Any]], ctx: TrainContext) -> dict[str, Any]:
        """Tensors for one micro-batch. Must set `student_tokens` (int): tokens the student processes."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: TrainContext) -> LossOutput:
        """Mean loss over the micro-batch's examples, plus metrics (floats)."""


class DefaultParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
