"""The matched budget turned into a plan: how many optimizer steps, which prompts in which step.

Every method trains on the same prompts in the same order for the same number of optimizer steps of
`effective_batch` prompts each (methods produce exactly one example per prompt, so a step means the
same thing for all of them). The data order is a pure function of (seed, step), so resuming needs
only the step counter. A setting that cannot fit fails here, before any training, with a message
that says what to change.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from harness.config import Budget
from harness.errors import BudgetError
from harness.training.accounting import flops_train
from harness.training.schedule import warmup_steps_for


@dataclass(frozen=True)
class TrainPlan:
    num_prompts: int
    effective_batch: int  # prompts per optimizer step, over all processes
    micro_batch: int  # prompts per forward/backward on one process
    num_processes: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    seed: int
    steps_from: str  # "max_steps" or "epochs"

    @property
    def per_process_batch(self) -> int:
        return self.effective_batch // self.num_processes

    @property
    def accumulation_steps(self) -> int:
        return self.per_process_batch // self.micro_batch

    @property
    def dropped_per_epoch(self) -> int:
        """Prompts left out of each epoch so that every step has exactly `effective_batch` prompts."""
        return self.num_prompts - self.steps_per_epoch * self.effective_batch

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.num_prompts))
        # A fresh generator per (seed, epoch): no hidden state to checkpoint, same order on every process.
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def step_indices(self, step: int) -> list[int]:
        """Prompt indices of optimizer step `step` (0-based), all processes together."""
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.effective_batch
        return self.epoch_order(epoch)[start : start + self.effective_batch]

    def micro_batches(self, step: int, process_index: int = 0) -> list[list[int]]:
        """This process's share of the step, cut into micro-batches."""
        indices = self.step_indices(step)
        share = indices[process_index * self.per_process_batch : (process_index + 1) * self.per_process_batch]
        return [share[i : i + self.micro_batch] for i in range(0, len(share), self.micro_batch)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_prompts": self.num_prompts,
            "effective_batch": self.effective_batch,
            "micro_batch": self.micro_batch,
            "num_processes": self.num_processes,
            "accumulation_steps": self.accumulation_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "dropped_per_epoch": self.dropped_per_epoch,
            "seed": self.seed,
            "steps_from": self.steps_from,
        }


def plan_training(budget: Budget, num_prompts: int, seed: int, num_processes: int = 1) -> TrainPlan:
    """Number of optimizer steps and batch layout, or a `BudgetError` saying why the budget cannot fit."""
    if num_prompts <= 0:
        raise BudgetError("no training prompts: the prompt set (after every method's filter) is empty")
    if budget.effective_batch % (budget.micro_batch * num_processes):
        raise BudgetError(
            f"budget.effective_batch ({budget.effective_batch}) must be a multiple of budget.micro_batch "
            f"({budget.micro_batch}) x processes ({num_processes}); change one of them"
        )
    if num_prompts < budget.effective_batch:
        raise BudgetError(
            f"budget.effective_batch is {budget.effective_batch} prompts per optimizer step but only "
            f"{num_prompts} training prompts are available; lower effective_batch or add prompts"
        )
    if budget.max_prompt_length >= budget.max_length:
        raise BudgetError(
            f"budget.max_prompt_length ({budget.max_prompt_length}) leaves no room for a response within "
            f"budget.max_length ({budget.max_length}); raise max_length or lower max_prompt_length"
        )
    steps_per_epoch = num_prompts // budget.effective_batch
    if budget.max_steps is not None:
        total, source = budget.max_steps, "max_steps"
    else:
        assert budget.epochs is not None
        total, source = math.floor(budget.epochs * steps_per_epoch), "epochs"
        if total < 1:
            raise BudgetError(
                f"budget.epochs={budget.epochs} of {steps_per_epoch} steps per epoch rounds down to zero "
                f"optimizer steps; raise epochs or set max_steps"
            )
    return TrainPlan(
        num_prompts=num_prompts,
        effective_batch=budget.effective_batch,
        micro_batch=budget.micro_batch,
        num_processes=num_processes,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=warmup_steps_for(total, budget.warmup_ratio),
        seed=seed,
        steps_from=source,
    )


def check_method_fits(
    method_name: str, num_groups: int, examples: list[Any], prompt_lengths: list[int], budget: Budget,
    scaffold_tokens: int = 0,
) -> dict[str, int]:
    """Checks that need the method's examples and the prompts' token lengths (`scaffold_tokens`: the
    chat template and system prompt around an empty question). Returns counters for the manifest."""
    if scaffold_tokens >= budget.max_prompt_length:
        raise BudgetError(
            f"budget.max_prompt_length ({budget.max_prompt_length}) is too small for any prompt: the student's "
            f"chat template and system prompt alone take {scaffold_tokens} tokens; raise max_prompt_length"
        )
    if len(examples) != num_groups:
        raise BudgetError(
            f"method {method_name!r} built {len(examples)} examples from {num_groups} prompts; a method "
            f"must build exactly one example per prompt so that a step means the same for every method"
        )
    truncated = sum(1 for n in prompt_lengths if n > budget.max_prompt_length)
    # Longer prompts are cut from the left (the question's end survives); counted so a report can say so.
    return {"prompts_truncated": truncated, "longest_prompt_tokens": max(prompt_lengths, default=0)}


def truncation_counts(prompt_lengths: list[int], response_lengths: list[list[int]], budget: Budget) -> dict[str, int]:
    """How many prompts and responses the budget's truncation rule cuts (`fit_group`, from token lengths)."""
    from harness.methods.common import fit_group

    prompts_cut = responses_cut = 0
    for prompt, responses in zip(prompt_lengths, response_lengths, strict=True):
        cut_prompt, cut = fit_group([0] * prompt, [[0] * r for r in responses], budget.max_length,
                                    budget.max_prompt_length, budget.truncation)
        prompts_cut += len(cut_prompt) < prompt
        responses_cut += sum(len(c) < r for c, r in zip(cut, responses, strict=True))
    return {"prompts_truncated": prompts_cut, "responses_truncated": responses_cut}


def check_step_fits(method_name: str, step_tokens: int, student_params: int, budget: Budget,
                    trainable: int | None = None) -> None:
    """The first optimizer step must fit the caps, else the budget can train nothing: fail early."""
    if budget.max_student_tokens is not None and step_tokens > budget.max_student_tokens:
        raise BudgetError(
            f"method {method_name!r}: one optimizer step processes {step_tokens} student tokens, more than "
            f"budget.max_student_tokens ({budget.max_student_tokens}); raise the cap or lower "
            f"effective_batch / max_length"
        )
    flops = flops_train(student_params, step_tokens, trainable)
    if budget.max_flops is not None and flops > budget.max_flops:
        per_token = f"6 x {student_params}" if trainable is None else f"4 x {student_params} + 6 x {trainable}"
        raise BudgetError(
            f"method {method_name!r}: one optimizer step costs ~{flops:.3g} FLOPs ({per_token} "
            f"params x {step_tokens} tokens), more than budget.max_flops ({budget.max_flops:.3g}); raise the "
            f"cap or lower effective_batch / max_length"
        )


def cap_stop_reason(budget: Budget, used_tokens: int, used_flops: float, step_tokens: int,
                    student_params: int, trainable: int | None = None) -> str | None:
    """Why the next step must not run (it would exceed a cap), or None: caps stop at the first step
    that would exceed them, so a run never goes over."""
    if budget.max_student_tokens is not None and used_tokens + step_tokens > budget.max_student_tokens:
        return "max_student_tokens"
    if budget.max_flops is not None and used_flops + flops_train(student_params, step_tokens, trainable) > budget.max_flops:
        return "max_flops"
    return None
