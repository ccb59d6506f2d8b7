"""PAD's `score_precision`: fp32 by default; `bf16_as_released` rounds from the student's logits to the loss as
the released run's bf16 ZeRO-2 engine did. The references below are the released code retyped
(EganGu/PAD scripts/simpo_trainer.py: `get_batch_logps`, `plackett_luce_logprob`,
`jenson_shannon_divergence`, `pd_loss`), run in bf16 on the same logits: the bf16 path must equal them."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny

from harness.methods.base import PromptGroup, Signal, TrainContext
from harness.methods.common import pack_sequences, sequence_logprobs
from harness.methods.pad import PADMethod
from harness.methods.pad_loss import pad_loss

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the released code, retyped
def released_batch_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`get_batch_logps(average_log_prob=True)`; labels are -100 outside the response."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != -100
    labels[labels == -100] = 0
    per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    return (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)


def released_plackett_luce(scores: torch.Tensor) -> torch.Tensor:
    b, n = scores.shape
    all_rankings = scores.new_tensor(list(itertools.permutations(range(n))), dtype=torch.long)
    num_rankings = all_rankings.shape[0]
    scores_expanded = scores.unsqueeze(1).expand(b, num_rankings, n)
    rankings_expanded = all_rankings.unsqueeze(0).expand(b, num_rankings, n)
    log_rankings_probs = scores.new_zeros((b, num_rankings))
    for k in range(n):
        chosen_items = torch.gather(scores_expanded, 2, rankings_expanded[:, :, k].unsqueeze(2)).squeeze(2)
        mask = rankings_expanded[:, :, :k]
        available_items_mask = scores.new_ones((b, num_rankings, n), dtype=torch.bool).scatter(2, mask, False)
        denom = scores_expanded.masked_fill(~available_items_mask, -1e8).logsumexp(-1)
        log_rankings_probs += chosen_items - denom
    return log_rankings_probs


def released_jsd(n1_logprobs: torch.Tensor, n2_logprobs: torch.Tensor) -> torch.Tensor:
    m_logprobs = torch.cat((n1_logprobs, n2_logprobs), 0).logsumexp(0).unsqueeze(0) + n1_logprobs.new_tensor(0.5).log()
    loss = F.kl_div(n1_logprobs, m_logprobs, reduction="none", log_target=True).sum(-1)
    loss += F.kl_div(n2_logprobs, m_logprobs, reduction="none", log_target=True).sum(-1)
    return 0.5 * loss


def released_pd_loss(student_logps: torch.Tensor, teacher_logps: torch.Tensor, beta: float) -> torch.Tensor:
    student_pref = released_plackett_luce(beta * student_logps)
    teacher_pref = released_plackett_luce(beta * teacher_logps)
    return released_jsd(student_pref, teacher_pref).mean()


# ---------------------------------------------------------------- helpers
class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given (bf16, as a bf16 engine's lm_head returns them)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.logits = logits

    def forward(self, **_: Any) -> Any:
        return SimpleNamespace(logits=self.logits)


def packed_batch() -> tuple[Any, torch.Tensor]:
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    responses = [[10, 11, 12, 13, 14], [15, 16], [17, 18, 19]]
    packed = pack_sequences(prompts, responses, pad_id=0, max_length=64, max_prompt=32)
    labels = packed.input_ids.masked_fill(packed.response_mask == 0, -100)
    return packed, labels


def sharp_logits(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (4.0 * torch.randn(shape, generator=gen)).to(torch.bfloat16)


# ---------------------------------------------------------------- tests
def test_bf16_scores_equal_the_released_get_batch_logps() -> None:
    packed, labels = packed_batch()
    logits = sharp_logits((*packed.input_ids.shape, 40))
    model = FixedLogits(logits)
    _, mean_bf16, _ = sequence_logprobs(model, packed, torch.bfloat16)
    released = released_batch_logps(logits, labels)
    assert mean_bf16.dtype == torch.bfloat16 and torch.equal(mean_bf16, released)
    # The default is fp32 and is what it always was: the same formula on upcast logits ...
    _, mean_fp32, _ = sequence_logprobs(model, packed)
    assert mean_fp32.dtype == torch.float32
    assert torch.equal(mean_fp32, released_batch_logps(logits.float(), labels))
    # ... which bf16 rounding moves (the test can fail).
    assert not torch.equal(mean_fp32, mean_bf16.float())


def test_bf16_scores_under_cpu_autocast_are_still_bf16() -> None:
    """Inside the trainer's autocast the bf16 arithmetic stays bf16 (autocast is switched off for it)."""
    packed, labels = packed_batch()
    logits = sharp_logits((*packed.input_ids.shape, 40), seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, mean, _ = sequence_logprobs(FixedLogits(logits), packed, torch.bfloat16)
    assert torch.equal(mean, released_batch_logps(logits, labels))


@pytest.mark.parametrize("n", [2, 4])
def test_bf16_compat_loss_equals_the_released_pd_loss(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    student = (-1.0 - torch.rand((3, n), generator=gen)).to(torch.bfloat16)  # mean log-probs, as released
    teacher = torch.log(0.2 + 0.6 * torch.rand((3, n), generator=gen)).to(torch.bfloat16)  # log m_i
    ours = pad_loss(10.0 * student, 10.0 * teacher, "ppd", reference_code_compat=True)
    released = released_pd_loss(student, teacher, 10.0)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, released)
    # fp32 on the same (bf16-valued) inputs differs: the bf16 loss is rounded like the released one.
    fp32 = pad_loss(10.0 * student.float(), 10.0 * teacher.float(), "ppd", reference_code_compat=True)
    assert float(fp32) != float(ours)


def _groups(n: int = 4) -> list[PromptGroup]:
    prefs = [[0.5, 0.8, 0.3, 0.6], [0.2, 0.5, 0.4, 0.7], [0.7, 0.6, 0.5, 0.9], [0.4, 0.3, 0.1, 0.5]]
    texts = [["alpha beta", "gamma", "delta epsilon zeta", "eta"], ["theta iota", "kappa", "alpha", "beta gamma"]]
    return [PromptGroup(f"p{i}", [{"role": "user", "content": f"question {i}?"}], texts[i],
                        {Signal.MCQ_PREFERENCE: prefs}) for i in range(2)]


def test_pad_bf16_as_released_equals_the_released_computation_on_the_same_logits() -> None:
    """End to end through the method on a tiny model in the trainer's autocast: the released arithmetic on
    the logits of the very forward the method runs."""
    student = make_tiny("llama", seed=0)
    with torch.no_grad():
        student.model.model.norm.weight.mul_(4.0)
    ctx = TrainContext(formatter=student.formatter, max_length=64, max_prompt_length=32, share_prompts=False)
    method = PADMethod({"reference_code_compat": True, "score_precision": "bf16_as_released"})
    batch = method.collate(method.build_examples(_groups(), None), ctx)  # type: ignore[arg-type]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.loss(student.model, batch, ctx)
        packed = batch["packed"]
        logits = student.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    labels = packed.input_ids.masked_fill(packed.response_mask == 0, -100)
    student_logps = released_batch_logps(logits, labels).view(2, 4)
    teacher_logps = torch.tensor([g["teacher_rewards"] for g in method.build_examples(_groups(), None)])  # type: ignore[arg-type]
    released = released_pd_loss(student_logps, teacher_logps.to(torch.bfloat16), 10.0)
    assert out.loss.dtype == torch.bfloat16 and torch.equal(out.loss, released)
    # The default (fp32) is a different number on the same model and data.
    default = PADMethod({"reference_code_compat": True})
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fp32 = default.loss(student.model, default.collate(default.build_examples(_groups(), None), ctx), ctx)  # type: ignore[arg-type]
    assert fp32.loss.dtype == torch.float32 and float(fp32.loss) != float(out.loss)
