"""Accounting: the FLOP formulas, precompute attribution, MFU, and what a real run records."""

from __future__ import annotations

import pytest
from conftest import make_tiny
from helpers.training import NLLMethod, budget, make_groups

from harness.training import train
from harness.training.accounting import (
    Accounting,
    count_params,
    flops_forward,
    flops_train,
    peak_flops_for,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_flop_formulas() -> None:
    assert flops_train(1_000, 10) == 60_000  # 6 N T: forward 2NT + backward 4NT
    assert flops_forward(1_000, 10) == 20_000  # 2 N T


def test_training_and_precompute_flops_by_hand() -> None:
    acc = Accounting(student_params=100, teacher_params=1_000)
    acc.add_student_train(50)  # forward + backward
    acc.add_student_forward(10)  # forward only (e.g. an online reference score)
    acc.add_student_generation(5)
    acc.add_teacher_forward(7)
    acc.add_teacher_generation(3)
    acc.add_precompute({"teacher_forward_tokens": 200, "teacher_generation_tokens": 20,
                        "student_forward_tokens": 40})
    assert acc.student_forward_tokens == 60 and acc.student_backward_tokens == 50
    assert acc.student_train_flops == 6 * 100 * 50 + 2 * 100 * (10 + 5)
    assert acc.teacher_online_flops == 2 * 1_000 * (7 + 3)
    assert acc.training_flops == 30_000 + 3_000 + 20_000
    assert acc.precompute_flops == 2 * 1_000 * 220 + 2 * 100 * 40
    d = acc.to_dict()
    assert d["total_flops"] == 53_000 + 448_000
    assert Accounting.from_dict(d).to_dict() == d  # round trip through a checkpoint / manifest


def test_unknown_precompute_keys_are_kept_not_counted() -> None:
    acc = Accounting(teacher_params=10)
    acc.add_precompute({"judge_calls": 3, "teacher_forward_tokens": 5})
    assert acc.extra["precompute_other"] == {"judge_calls": 3}
    assert acc.precompute_flops == 2 * 10 * 5


def test_mfu_on_a_known_gpu_and_none_on_cpu() -> None:
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for("NVIDIA L4") == 121e12
    assert peak_flops_for("NVIDIA L40S") == 362e12
    assert peak_flops_for("Some Future Accelerator") is None
    acc = Accounting(student_params=10**9, peak_flops_per_device=1e15, num_processes=2, train_time_s=10.0)
    acc.add_student_train(10**6)
    assert acc.mfu == pytest.approx(6e15 / (10.0 * 1e15 * 2))
    assert Accounting(student_params=1, train_time_s=1.0).mfu is None


def test_tied_embeddings_counted_once() -> None:
    model = make_tiny().model
    everything = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert count_params(model) == everything - model.get_input_embeddings().weight.numel()


def test_a_real_run_records_consistent_accounting(tmp_path) -> None:
    student = make_tiny()
    result = train(NLLMethod(), make_groups(8), student, budget(max_steps=2), 0, tmp_path / "w", tmp_path / "o",
                   precompute_accounting={"teacher_forward_tokens": 1234, "teacher_params": 5000},
                   progress=False)
    acc = result.accounting
    tokens = sum(r["tokens"] for r in result.log_rows)
    assert acc["student_backward_tokens"] == tokens
    assert acc["training_flops"] == 6 * count_params(student.model) * tokens
    assert acc["teacher_forward_tokens_precompute"] == 1234 and acc["precompute_flops"] == 2 * 5000 * 1234
    assert acc["optimizer_steps"] == 2 and acc["prompts_seen"] == 8
    assert acc["peak_memory_kind"] == "cpu_peak_rss" and acc["peak_memory_bytes"] > 10**6
    assert acc["train_tokens_per_s"] > 0 and acc["wall_time_s"] >= acc["train_time_s"] > 0


class TeacherScoringNLL(NLLMethod):
    """Scores each batch with the teacher online (as an on-policy method would) and reports it."""

    name = "test_teacher_online"

    def loss(self, model, batch, ctx):  # type: ignore[no-untyped-def]
        teacher = ctx.teacher_loader()
        packed = batch["packed"]
        teacher.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask)
        ctx.accounting.add_teacher_forward(packed.num_tokens)
        return super().loss(model, batch, ctx)


def test_online_teacher_work_is_counted_with_the_teacher_size(tmp_path) -> None:
    teacher = make_tiny("llama-wide", seed=1)
    loads = []

    def loader():  # type: ignore[no-untyped-def]
        loads.append(1)
        return teacher

    result = train(TeacherScoringNLL(), make_groups(8), make_tiny(), budget(max_steps=2), 0, tmp_path / "w",
                   tmp_path / "o", teacher_loader=loader, progress=False)
    acc = result.accounting
    tokens = acc["student_backward_tokens"]
    assert acc["teacher_forward_tokens_online"] == tokens  # the same sequences, scored once by the teacher
    assert acc["teacher_params"] == count_params(teacher.model) and acc["flops_complete"]
    assert acc["teacher_online_flops"] == 2 * count_params(teacher.model) * tokens
    assert acc["training_flops"] == 6 * acc["student_params"] * tokens + acc["teacher_online_flops"]
    assert not Accounting(teacher_forward_tokens_precompute=5).flops_complete  # size unknown: said so
