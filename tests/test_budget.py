"""Matched budgets: the plan (steps, data order), the schedule, the caps, and clear errors.

The two small methods (token-averaged NLL, and a pairwise log-likelihood margin) live in
tests/helpers/training.py, shared with test_trainer.py and others. Token counts are checked against an
independent count from the byte tokenizer's layout (one token per UTF-8 byte, one per ChatML special), not
against the code under test.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from conftest import make_tiny
from helpers.training import MarginMethod, NLLMethod, budget, make_groups

from harness.config import Budget
from harness.errors import BudgetError
from harness.methods.base import PromptGroup
from harness.training import plan_training, train
from harness.training.schedule import learning_rate, lr_multiplier, warmup_steps_for

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def independent_tokens(text_prompt: str, response: str, budget: Budget) -> int:
    """Byte tokenizer + ChatML: '<|im_start|>user\\n{p}<|im_end|>\\n<|im_start|>assistant\\n' has 3 specials
    and the bytes in between; a response is its bytes + the template's whole turn suffix '<|im_end|>\\n'
    (an end-of-turn token and one newline byte). Then the budget's cuts:
    prompt from the left to max_prompt_length, response to the room left."""
    prompt = 3 + len(f"user\n{text_prompt}\nassistant\n".encode())
    resp = len(response.encode()) + 2
    prompt = min(prompt, budget.max_prompt_length)
    return prompt + min(resp, max(1, budget.max_length - prompt))


# --- plan -----------------------------------------------------------------------------------------
def test_plan_steps_from_epochs_and_max_steps() -> None:
    plan = plan_training(budget(epochs=2, effective_batch=4), num_prompts=10, seed=0)
    assert (plan.steps_per_epoch, plan.total_steps, plan.dropped_per_epoch) == (2, 4, 2)
    assert plan.accumulation_steps == 2 and plan.warmup_steps == 1
    assert plan_training(budget(epochs=1.5), 16, 0).total_steps == 6  # floor(1.5 * 4)
    assert plan_training(budget(max_steps=7), 16, 0).total_steps == 7  # max_steps overrides epochs


def test_data_order_is_a_per_epoch_permutation_fixed_by_seed() -> None:
    plan = plan_training(budget(epochs=3), num_prompts=8, seed=5)
    epochs = [sum((plan.step_indices(s) for s in range(e * 2, e * 2 + 2)), []) for e in range(3)]
    assert all(sorted(e) == list(range(8)) for e in epochs)  # every prompt once per epoch
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    again = plan_training(budget(epochs=3), num_prompts=8, seed=5)
    assert [again.step_indices(s) for s in range(6)] == [plan.step_indices(s) for s in range(6)]
    other = plan_training(budget(epochs=3), num_prompts=8, seed=6)
    assert [other.step_indices(s) for s in range(6)] != [plan.step_indices(s) for s in range(6)]
    assert plan.micro_batches(0) == [plan.step_indices(0)[:2], plan.step_indices(0)[2:]]


# --- schedule -------------------------------------------------------------------------------------
def test_schedule_hand_computed_points() -> None:
    # 10 steps, warmup ceil(0.2 * 10) = 2: step 0 -> 0, step 1 -> 1/2, then decay over 8 steps.
    assert warmup_steps_for(10, 0.2) == 2
    assert lr_multiplier(0, 10, 2, "cosine") == 0.0
    assert lr_multiplier(1, 10, 2, "cosine") == 0.5
    assert lr_multiplier(2, 10, 2, "cosine") == 1.0
    assert lr_multiplier(6, 10, 2, "cosine") == pytest.approx(0.5)  # halfway: (1 + cos(pi/2)) / 2
    assert lr_multiplier(4, 10, 2, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_multiplier(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_multiplier(9, 10, 2, "linear") == pytest.approx(1 / 8)
    assert lr_multiplier(9, 10, 2, "constant") == 1.0
    assert learning_rate(4, 10, 2e-4, 0.2, "linear") == pytest.approx(2e-4 * 0.75)
    assert lr_multiplier(0, 5, 0, "cosine") == 1.0  # no warmup: full LR at once


def test_logged_lr_follows_the_schedule(tmp_path) -> None:
    b = budget(max_steps=4, warmup_ratio=0.25, schedule="linear", learning_rate=1e-3)
    result = train(NLLMethod(), make_groups(8), make_tiny(), b, 0, tmp_path / "w", tmp_path / "o", progress=False)
    # warmup 1 step: 0, then linear over 3 steps: 1, 2/3, 1/3.
    assert [r["lr"] for r in result.log_rows] == pytest.approx([0.0, 1e-3, 2e-3 / 3, 1e-3 / 3])


# --- matched budget across methods -----------------------------------------------------------------
@pytest.mark.parametrize("method_cls", [NLLMethod, MarginMethod])
def test_two_methods_same_steps_and_prompts_with_true_token_counts(tmp_path, method_cls) -> None:
    groups = make_groups(12)
    b = budget(epochs=2, effective_batch=4, micro_batch=2)
    result = train(method_cls(), groups, make_tiny(), b, 3, tmp_path / "w", tmp_path / "o", progress=False)
    acc = result.accounting
    assert acc["optimizer_steps"] == 6 and acc["prompts_seen"] == 24  # the same for both methods

    plan = plan_training(b, len(groups), seed=3)
    seen = [i for s in range(plan.total_steps) for i in plan.step_indices(s)]
    expected = 0
    for i in seen:
        g = groups[i]
        rows = g.responses[:1] if method_cls is NLLMethod else g.responses[:2]
        expected += sum(independent_tokens(g.messages[0]["content"], r, b) for r in rows)
    assert acc["student_backward_tokens"] == acc["student_forward_tokens"] == expected
    assert sum(r["tokens"] for r in result.log_rows) == expected


def test_token_cap_stops_at_first_step_that_would_exceed(tmp_path) -> None:
    groups = make_groups(8)
    b0 = budget(max_steps=6, effective_batch=4, micro_batch=4)
    plan = plan_training(b0, len(groups), seed=0)
    per_step = [sum(independent_tokens(groups[i].messages[0]["content"], groups[i].responses[0], b0)
                    for i in plan.step_indices(s)) for s in range(6)]
    cap = sum(per_step[:3]) + per_step[3] - 1  # step 4 would go one token over
    b = budget(max_steps=6, effective_batch=4, micro_batch=4, max_student_tokens=cap)
    result = train(NLLMethod(), groups, make_tiny(), b, 0, tmp_path / "w", tmp_path / "o", progress=False)
    assert result.stop_reason == "max_student_tokens"
    assert result.accounting["optimizer_steps"] == 3
    assert result.accounting["student_backward_tokens"] == sum(per_step[:3]) <= cap


def test_flop_cap_stops_and_is_reported(tmp_path) -> None:
    student = make_tiny()
    params = sum(p.numel() for p in student.model.parameters())  # parameters() yields tied weights once
    groups = make_groups(8)
    b0 = budget(max_steps=4, effective_batch=4, micro_batch=4)
    plan = plan_training(b0, len(groups), seed=0)
    first = sum(independent_tokens(groups[i].messages[0]["content"], groups[i].responses[0], b0)
                for i in plan.step_indices(0))
    b = budget(max_steps=4, effective_batch=4, micro_batch=4, max_flops=6.0 * params * first * 1.5)
    result = train(NLLMethod(), groups, student, b, 0, tmp_path / "w", tmp_path / "o", progress=False)
    assert result.stop_reason == "max_flops" and result.accounting["optimizer_steps"] == 1
    assert result.accounting["training_flops"] == 6.0 * params * first


# --- clear, early errors --------------------------------------------------------------------------
def test_budget_errors_say_what_to_change() -> None:
    with pytest.raises(BudgetError, match="only 3 training prompts"):
        plan_training(budget(effective_batch=4), 3, 0)
    with pytest.raises(BudgetError, match=r"multiple of budget.micro_batch \(2\) x processes \(3\)"):
        plan_training(budget(effective_batch=4, micro_batch=2), 16, 0, num_processes=3)
    with pytest.raises(BudgetError, match="leaves no room for a response"):
        plan_training(budget(max_length=32, max_prompt_length=32), 16, 0)
    with pytest.raises(BudgetError, match="rounds down to zero"):
        plan_training(budget(epochs=0.1, effective_batch=4), 8, 0)
    with pytest.raises(BudgetError, match="prompt set .* is empty"):
        plan_training(budget(), 0, 0)


class TwoExamplesPerPrompt(NLLMethod):
    name = "test_two_per_prompt"

    def build_examples(self, groups: list[PromptGroup], rng: random.Random) -> list[dict[str, Any]]:
        return super().build_examples(groups, rng) * 2


def test_method_breaking_one_example_per_prompt_fails_before_training(tmp_path) -> None:
    with pytest.raises(BudgetError, match="built 16 examples from 8 prompts"):
        train(TwoExamplesPerPrompt(), make_groups(8), make_tiny(), budget(), 0, tmp_path / "w", tmp_path / "o",
              progress=False)
    assert not (tmp_path / "o").exists()


def test_prompt_budget_smaller_than_the_chat_template_fails_early(tmp_path) -> None:
    # Empty question: '<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n' = 3 specials + 16 bytes = 19;
    # system turn: '<|im_start|>system\nAnswer briefly.<|im_end|>\n' = 2 specials + 23 bytes = 25.
    student = make_tiny(system_prompt="Answer briefly.")
    with pytest.raises(BudgetError, match="chat template and system prompt alone take 44 tokens"):
        train(NLLMethod(), make_groups(8), student, budget(max_prompt_length=40), 0, tmp_path / "w",
              tmp_path / "o", progress=False)


def test_truncated_prompts_are_counted(tmp_path) -> None:
    groups = make_groups(8)
    b = budget(max_steps=1, max_prompt_length=24)
    lengths = [3 + len(f"user\n{g.messages[0]['content']}\nassistant\n") for g in groups]
    result = train(NLLMethod(), groups, make_tiny(), b, 0, tmp_path / "w", tmp_path / "o", progress=False)
    assert result.accounting["extra"]["prompts_truncated"] == sum(n > 24 for n in lengths) > 0
    assert result.accounting["extra"]["longest_prompt_tokens"] == max(lengths)


def test_cap_smaller_than_one_step_fails_early(tmp_path) -> None:
    with pytest.raises(BudgetError, match="one optimizer step processes .* student tokens, more than"):
        train(NLLMethod(), make_groups(8), make_tiny(), budget(max_student_tokens=10), 0, tmp_path / "w",
              tmp_path / "o", progress=False)
    with pytest.raises(BudgetError, match="more than budget.max_flops"):
        train(NLLMethod(), make_groups(8), make_tiny(), budget(max_flops=1e3), 0, tmp_path / "w2",
              tmp_path / "o2", progress=False)
