"""DPO's cached reference is the policy's own step-0 log-probs: the initial student scored in the trainer's
precision path (fp32 master weights under the autocast `mixed_precision` picks), not as loaded (bf16).

On the CPU, accelerate runs `mixed_precision: bf16` as `torch.autocast("cpu", dtype=torch.bfloat16)` around
fp32 master weights: the GPU's path with other kernels. Untested here: CUDA kernels, and the DeepSpeed and
FSDP launches (their precision paths are read from accelerate's source: `test_policy_precision_per_launch`).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import make_tiny
from helpers.training import WORDS, budget

from baselines.dpo import DPOMethod
from harness.methods.base import PromptGroup, Signal
from harness.models.base import LoadedModel
from harness.signals import sequence_scores
from harness.signals.builtin import StudentLogProbs
from harness.training.precision import PolicyPrecision, policy_precision
from harness.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_LENGTH, MAX_PROMPT = 64, 32


def bf16_student() -> LoadedModel:
    """A tiny llama loaded in bf16, sharpened (final norm x4) so its log-probs are far from uniform and the
    bf16 residual stream moves them well beyond float32 noise."""
    student = make_tiny("llama", seed=0)
    with torch.no_grad():
        student.model.model.norm.weight.mul_(4.0)
    student.model.to(torch.bfloat16)
    student.identity["dtype"] = "bfloat16"
    return student


def pair_groups(count: int = 6) -> list[PromptGroup]:
    """Two responses per prompt, the teacher preferring the first: DPO's pair is (chosen 0, rejected 1)."""
    rng = random.Random(0)
    groups = []
    for i in range(count):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "?"
        answers = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(2)]
        groups.append(PromptGroup(f"p{i}", [{"role": "user", "content": prompt}], answers,
                                  {Signal.MCQ_PREFERENCE: [[0.5, 0.9], [0.1, 0.5]]}))
    return groups


def signal_context(student: LoadedModel, groups: list[PromptGroup], mixed_precision: str, lora: Any = None) -> Any:
    exp = SimpleNamespace(budget=budget(max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT,
                                        mixed_precision=mixed_precision),
                          signals=SimpleNamespace(batch_size=2),  # one prompt (2 responses) per forward
                          student=SimpleNamespace(lora=lora))
    return SimpleNamespace(exp=exp, groups=lambda: groups, model=lambda who: student,
                           model_key=lambda who: dict(student.identity))


def with_reference(groups: list[PromptGroup], reference: list[list[float]]) -> list[PromptGroup]:
    return [PromptGroup(g.prompt_id, g.messages, g.responses, {**g.signals, Signal.REFERENCE_LOGPROB: ref})
            for g, ref in zip(groups, reference, strict=True)]


def step0_loss(student: LoadedModel, groups: list[PromptGroup], tmp: Path, mixed_precision: str,
               lora: Any = None) -> float:
    b = budget(max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT, mixed_precision=mixed_precision, epochs=1,
               effective_batch=2, micro_batch=1)  # a micro-batch is one pair: the layout of one signal row
    result = train(DPOMethod(), groups, student, b, 0, tmp / "work", tmp / "out", stop_after_steps=1,
                   progress=False, lora=lora)
    return float(result.log_rows[0]["loss"])


@pytest.mark.parametrize("mixed_precision", ["auto", "bf16"])
def test_dpo_loss_at_step_0_is_log_2_for_a_bf16_student(tmp_path: Path, mixed_precision: str) -> None:
    groups = pair_groups()
    student = bf16_student()
    weights_before = {k: v.clone() for k, v in student.model.state_dict().items()}
    ctx = signal_context(student, groups, mixed_precision)
    source = StudentLogProbs()
    assert source.inputs(ctx)["precision"] == {"weights": "float32", "autocast": "bfloat16"}
    source.compute(ctx, tmp_path)
    reference = source.load(Signal.REFERENCE_LOGPROB, tmp_path)
    # The scoring ran the student in place in fp32 and gave it back exactly as loaded.
    after = student.model.state_dict()
    assert all(after[k].dtype == torch.bfloat16 and torch.equal(after[k], v) for k, v in weights_before.items())
    # As the code was: the reference scored on the bf16 student as loaded.
    as_loaded = sequence_scores(student, groups, batch_size=2, max_length=MAX_LENGTH,
                                max_prompt_length=MAX_PROMPT, progress=None).sum

    loss = step0_loss(student, with_reference(groups, reference), tmp_path / "policy", mixed_precision)
    assert loss == pytest.approx(math.log(2), abs=1e-6)
    old = step0_loss(bf16_student(), with_reference(groups, as_loaded), tmp_path / "loaded", mixed_precision)
    assert abs(old - math.log(2)) > 1e-5  # the test can fail: the loaded precision path is off at step 0


def test_a_lora_students_reference_is_its_bf16_base_and_dpo_starts_at_log_2(tmp_path: Path) -> None:
    """A LoRA student's base is not upcast (harness.training.lora): its policy runs bf16 weights under bf16
    autocast, and the reference is scored that way, which the key says."""
    pytest.importorskip("peft")
    from harness.config import LoraSpec

    lora = LoraSpec(r=4, alpha=8.0)
    groups = pair_groups()
    student = bf16_student()
    ctx = signal_context(student, groups, "auto", lora=lora)
    source = StudentLogProbs()
    assert source.inputs(ctx)["precision"] == {"weights": "bfloat16", "autocast": "bfloat16"}
    source.compute(ctx, tmp_path)
    reference = source.load(Signal.REFERENCE_LOGPROB, tmp_path)
    loss = step0_loss(student, with_reference(groups, reference), tmp_path / "lora", "auto", lora=lora)
    assert loss == pytest.approx(math.log(2), abs=1e-6)
    # The full fine-tuning reference (fp32 master weights) is another precision path: off at step 0.
    full_ctx = signal_context(bf16_student(), groups, "auto")
    StudentLogProbs().compute(full_ctx, tmp_path / "full")
    full_reference = StudentLogProbs().load(Signal.REFERENCE_LOGPROB, tmp_path / "full")
    off = step0_loss(bf16_student(), with_reference(groups, full_reference), tmp_path / "off", "auto", lora=lora)
    assert abs(off - math.log(2)) > 1e-5


def test_the_reference_key_names_the_precision_path() -> None:
    student = bf16_student()
    groups = pair_groups(1)
    keys = {mp: StudentLogProbs().inputs(signal_context(student, groups, mp))["precision"] for mp in ("no", "bf16")}
    assert keys == {"no": {"weights": "float32", "autocast": None},
                    "bf16": {"weights": "float32", "autocast": "bfloat16"}}


def test_policy_precision_per_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    bf16, fp32 = torch.bfloat16, torch.float32
    assert policy_precision("auto", "bfloat16") == PolicyPrecision(fp32, bf16)  # follows the load dtype
    assert policy_precision("auto", "float32") == PolicyPrecision(fp32, None)  # no CUDA here
    assert policy_precision("no", "bfloat16") == PolicyPrecision(fp32, None)
    assert policy_precision("fp16", "float32") == PolicyPrecision(fp32, torch.float16)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # a bf16 engine: bf16 module weights, no autocast
    assert policy_precision("bf16", "float32") == PolicyPrecision(bf16, None)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # FSDP's mixed-precision policy, plus autocast
    assert policy_precision("bf16", "float32") == PolicyPrecision(bf16, bf16)


def test_a_lossy_cast_gives_the_original_weights_back() -> None:
    """Under a DeepSpeed launch an fp32 student is scored with bf16 weights; afterwards it is fp32 again,
    with its own (not bf16-rounded) values."""
    from harness.training.precision import in_policy_precision

    model = make_tiny("llama", seed=0).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with in_policy_precision(model, PolicyPrecision(torch.bfloat16, None)):
        assert next(model.parameters()).dtype == torch.bfloat16
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
