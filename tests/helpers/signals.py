"""Tiny teacher/student pairs and the shared signals computed from them independently of the code under
test (one unpadded sequence at a time, full log-softmax), for tests that feed methods by hand."""

from __future__ import annotations

import torch
from conftest import make_tiny

from harness.methods.base import PromptGroup, Signal
from harness.models.base import LoadedModel


def sharpened_pair(student_seed: int = 0, teacher_seed: int = 1) -> tuple[LoadedModel, LoadedModel]:
    """(student, teacher): tiny llamas sharing one vocabulary. Random-init tiny models are nearly uniform;
    sharpen them (final norm x4 and x10) so divergences are far from zero and a wrong formula cannot hide
    inside float32 noise."""
    student = make_tiny("llama", seed=student_seed)
    teacher = make_tiny("llama", seed=teacher_seed, system_prompt="You are a careful assistant.")
    with torch.no_grad():
        student.model.model.norm.weight.mul_(4.0)
        teacher.model.model.norm.weight.mul_(10.0)
    return student, teacher


def seq_logprobs(model: torch.nn.Module, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Independent reference: full log-softmax [len(response), V] predicting each response token."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    return torch.log_softmax(logits.float(), -1)[len(prompt) - 1 : len(prompt) + len(response) - 1]


def token_logprobs(model: torch.nn.Module, prompt: list[int], response: list[int]) -> list[float]:
    lp = seq_logprobs(model, prompt, response)
    return [lp[t, tok].item() for t, tok in enumerate(response)]


def preference_matrix(win: list[float]) -> list[list[float]]:
    """An MCQ preference signal: P(i beats j) = win_i / (win_i + win_j); its row means order responses
    like `win`."""
    n = len(win)
    return [[win[i] / (win[i] + win[j]) if i != j else 0.5 for j in range(n)] for i in range(n)]


def add_model_signals(group: PromptGroup, student: LoadedModel, teacher: LoadedModel, topk: int) -> None:
    """The signals the models give for `group`'s responses: the teacher's top-k per response token, its
    mean log-prob (from its own context), and the initial student's sum (the DPO reference) and mean."""
    s_prompt = student.formatter.prompt_ids(group.messages)
    t_prompt = teacher.formatter.prompt_ids(group.messages)
    ids, lps, ref, savg, tavg = [], [], [], [], []
    for resp in group.responses:
        r = student.formatter.response_ids(resp)
        lp_t, id_t = seq_logprobs(teacher.model, t_prompt, r).topk(topk, -1)
        ids.append(id_t)
        lps.append(lp_t)
        s_lp = token_logprobs(student.model, s_prompt, r)
        ref.append(sum(s_lp))
        savg.append(sum(s_lp) / len(r))
        tavg.append(sum(token_logprobs(teacher.model, t_prompt, r)) / len(r))
    group.signals.update({Signal.TEACHER_TOPK: {"ids": ids, "logprobs": lps}, Signal.REFERENCE_LOGPROB: ref,
                          Signal.STUDENT_AVG_LOGPROB: savg, Signal.TEACHER_AVG_LOGPROB: tavg})
