"""The teacher's signals keep the teacher's whole context (found by tests/test_learning_sanity.py).

The budget's `max_prompt_length` limits the STUDENT's training inputs. It used to cut the teacher's prompt
too, from the left: in leaderboards/smol.yaml the teacher's prompts are 167-186 tokens and the limit is 112,
so the signals (teacher_logprobs, teacher_topk) never saw the teacher's system prompt and first
demonstration, while `teacher_agreement` scores with the whole context. Now the teacher keeps its whole
prompt and its responses are cut to what training keeps of the student's (`signals.scoring_inputs`).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny

from harness.methods.common import fit_group
from harness.models.scoring import Scorer
from harness.signals import sequence_scores, teacher_topk

SYSTEM = "Answer briefly, in plain words, and never repeat yourself."
GROUP = {"prompt_id": "p0", "messages": [{"role": "user", "content": "Name a river."}],
         "responses": ["The Nile.", "Rhine, which flows from the Alps to the North Sea."], "finished": [True, True]}


def teacher_and_student() -> tuple[object, object, int]:
    """A teacher with a system prompt and a student without: the student's prompt fits the budget whole,
    the teacher's does not."""
    teacher = make_tiny("llama", seed=1, system_prompt=SYSTEM)
    student = make_tiny("llama", seed=1)
    student_len = len(student.formatter.prompt_ids(GROUP["messages"]))
    assert student_len < len(teacher.formatter.prompt_ids(GROUP["messages"]))
    return teacher, student, student_len


def full_context_scores(teacher: object, cut: list[int] | None = None) -> list[float]:
    fmt = teacher.formatter  # type: ignore[attr-defined]
    responses = [fmt.response_ids(r) for r in GROUP["responses"]]
    if cut is not None:
        responses = [r[:n] for r, n in zip(responses, cut, strict=True)]
    return [s.mean_logprob for s in Scorer(teacher).score_groups([(fmt.prompt_ids(GROUP["messages"]), responses)])[0]]


def test_teacher_logprobs_keep_the_teachers_context() -> None:
    teacher, student, max_prompt = teacher_and_student()
    got = sequence_scores(teacher, [GROUP], max_length=max_prompt + 64, max_prompt_length=max_prompt,
                          cut_as=student.formatter)
    assert got.mean[0] == pytest.approx(full_context_scores(teacher), abs=1e-5)
    # Without the student's format (the old behaviour) the teacher's context was cut: the scores differ.
    old = sequence_scores(teacher, [GROUP], max_length=max_prompt + 64, max_prompt_length=max_prompt)
    assert old.mean[0] != pytest.approx(full_context_scores(teacher), abs=1e-3)


def test_teacher_responses_are_cut_where_training_cuts_the_students() -> None:
    """The room left by the STUDENT's prompt fixes how many response tokens training scores; the teacher's
    top-k rows cover exactly those tokens, in the teacher's whole context."""
    teacher, student, max_prompt = teacher_and_student()
    max_length = max_prompt + 20  # the long response is cut to 20 tokens, the short one is not
    fmt = student.formatter
    whole = [fmt.response_ids(r) for r in GROUP["responses"]]
    _, kept = fit_group(fmt.prompt_ids(GROUP["messages"]), whole, max_length, max_prompt, "per_response")
    lengths = [len(k) for k in kept]
    assert lengths[1] == 20 < len(whole[1]) and lengths[0] == len(whole[0]) <= 20

    cut = teacher_topk(teacher, [GROUP], k=4, max_length=max_length, max_prompt_length=max_prompt,
                       cut_as=student.formatter)
    whole_topk = teacher_topk(teacher, [GROUP], k=4)
    for n, got, want in zip(lengths, cut.values[0]["logprobs"], whole_topk.values[0]["logprobs"], strict=True):
        assert got.shape[0] == n
        torch.testing.assert_close(got, want[:n], atol=1e-5, rtol=0)
    scores = sequence_scores(teacher, [GROUP], max_length=max_length, max_prompt_length=max_prompt,
                             cut_as=student.formatter)
    assert scores.n_tokens[0] == lengths
    assert scores.mean[0] == pytest.approx(full_context_scores(teacher, lengths), abs=1e-5)


def test_the_teacher_signals_key_on_the_students_identity() -> None:
    """Their cut follows the student's tokens, so another student recomputes them; the student's own
    signals do not key on a second model."""
    from harness.signals.builtin import StudentLogProbs, TeacherLogProbs, TeacherTopK

    class Ctx:
        exp = type("E", (), {"budget": type("B", (), {"max_length": 64, "max_prompt_length": 32,
                                                        "truncation": "per_response"})(),
                             "signals": type("S", (), {"topk": 4})()})()

        def model_key(self, who: str) -> dict[str, str]:
            return {"model": f"{who}-id"}

    ctx = Ctx()
    assert TeacherLogProbs().inputs(ctx)["cut_as"] == {"model": "student-id"}  # type: ignore[arg-type]
    assert TeacherTopK().inputs(ctx)["cut_as"] == {"model": "student-id"}  # type: ignore[arg-type]
    assert "cut_as" not in super(StudentLogProbs, StudentLogProbs()).inputs(ctx)  # type: ignore[arg-type]
