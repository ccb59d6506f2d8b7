"""Known bug, found by tests/test_learning_sanity.py (issue 24, part 3): the teacher's signals are scored
with the teacher's prompt cut to the budget's `max_prompt_length` FROM THE LEFT, the limit meant for the
student's training inputs. A teacher whose context (system prompt, demonstrations) makes its prompt longer
than that loses its context: in leaderboards/smol.yaml the teacher's prompts are 167-186 tokens and
`max_prompt_length` is 112, so its system prompt and first demonstration are never seen by the signals
(teacher_logprobs, teacher_topk), while `teacher_agreement` scores with the whole context. Context
distillation then distils a teacher without its context. GKD's on-policy branch keeps the whole context.

Strict xfail: when the signals keep the teacher's whole prompt (cutting responses as training does), these
pass and the marker must go.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny

from harness.models.scoring import Scorer
from harness.signals import sequence_scores, teacher_topk

SYSTEM = "Answer briefly, in plain words, and never repeat yourself."
GROUP = {"prompt_id": "p0", "messages": [{"role": "user", "content": "Name a river."}],
         "responses": ["The Nile.", "Rhine"], "finished": [True, True]}


def budget_between_the_two_prompts() -> tuple[object, int]:
    teacher = make_tiny("llama", seed=1, system_prompt=SYSTEM)
    student = make_tiny("llama", seed=1)
    student_len = len(student.formatter.prompt_ids(GROUP["messages"]))
    teacher_len = len(teacher.formatter.prompt_ids(GROUP["messages"]))
    assert student_len < teacher_len
    return teacher, student_len  # the student's prompt fits the budget whole; the teacher's does not


def full_context_scores(teacher: object) -> list[float]:
    fmt = teacher.formatter  # type: ignore[attr-defined]
    group = (fmt.prompt_ids(GROUP["messages"]), [fmt.response_ids(r) for r in GROUP["responses"]])
    return [s.mean_logprob for s in Scorer(teacher).score_groups([group])[0]]


@pytest.mark.xfail(strict=True, reason="teacher signals cut the teacher's context to max_prompt_length (issue 24)")
def test_teacher_logprobs_keep_the_teachers_context() -> None:
    teacher, max_prompt = budget_between_the_two_prompts()
    got = sequence_scores(teacher, [GROUP], max_length=max_prompt + 64, max_prompt_length=max_prompt).mean[0]
    assert got == pytest.approx(full_context_scores(teacher), abs=1e-5)


@pytest.mark.xfail(strict=True, reason="teacher signals cut the teacher's context to max_prompt_length (issue 24)")
def test_teacher_topk_keeps_the_teachers_context() -> None:
    teacher, max_prompt = budget_between_the_two_prompts()
    cut = teacher_topk(teacher, [GROUP], k=4, max_length=max_prompt + 64, max_prompt_length=max_prompt)
    whole = teacher_topk(teacher, [GROUP], k=4)
    for got, want in zip(cut.values[0]["logprobs"], whole.values[0]["logprobs"], strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
