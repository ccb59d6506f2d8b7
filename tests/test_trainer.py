"""The training loop: exact resume, gradient accumulation, outputs, checkpoints without pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_tiny
from helpers.training import MarginMethod, NLLMethod, budget, make_groups
from safetensors.torch import load_file

from harness.config import LoggingConfig
from harness.errors import HarnessError
from harness.training import load_trained_weights, train
from harness.training.checkpoint import latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TIMING_KEYS = {"time_s", "wall_s", "tokens_per_s"}


def run(tmp: Path, name: str, method: Any = None, **kw: Any) -> Any:
    b = kw.pop("budget")
    student = kw.pop("student", None) or make_tiny("llama", seed=0)
    result = train(method or MarginMethod(), make_groups(8), student, b, 7, tmp / name / "work", tmp / name / "out",
                   progress=False, **kw)
    return result, student


def untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.parametrize(
    "arch, micro_batch, checkpoint_every, kill_after, resumes_from",
    [
        ("llama", 4, 1, 3, 3),  # no accumulation, checkpoint every step
        ("llama", 2, 2, 3, 2),  # accumulation 2, the kill lands between checkpoints: step 3 is redone
        ("gpt2", 2, 2, 5, 4),  # GPT-2 has dropout: equal only if the RNG state is restored too
    ],
)
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, arch, micro_batch, checkpoint_every, kill_after,
                                                     resumes_from) -> None:
    b = budget(epochs=3, effective_batch=4, micro_batch=micro_batch, checkpoint_every=checkpoint_every,
               weight_decay=0.01)
    full, full_student = run(tmp_path, "full", budget=b, student=make_tiny(arch, seed=0))
    assert full.accounting["optimizer_steps"] == 6

    killed, _ = run(tmp_path, "resumed", budget=b, stop_after_steps=kill_after, student=make_tiny(arch, seed=0))
    assert not killed.completed and len(killed.log_rows) == kill_after
    assert not (tmp_path / "resumed" / "out" / "model.safetensors").exists()
    torch.manual_seed(12345)  # the resuming process starts from unrelated RNG state, as after a real kill
    # A fresh model, as after a real kill.
    resumed, resumed_student = run(tmp_path, "resumed", budget=b, student=make_tiny(arch, seed=0))
    assert resumed.completed and resumed.resumed_from_step == resumes_from

    full_state = full_student.model.state_dict()
    for name, tensor in resumed_student.model.state_dict().items():
        assert torch.equal(tensor, full_state[name]), name  # bitwise
    assert untimed(resumed.log_rows) == untimed(full.log_rows)  # same losses, LRs, grad norms, tokens
    for key in ("student_backward_tokens", "optimizer_steps", "prompts_seen", "training_flops"):
        assert resumed.accounting[key] == full.accounting[key], key
    logged = [json.loads(line) for line in (tmp_path / "resumed/out/metrics.jsonl").read_text().splitlines()]
    assert untimed(logged) == untimed(full.log_rows)
    live = [json.loads(line) for line in (tmp_path / "resumed/work/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in live] == list(range(1, 7))  # no duplicated steps after the redo


def test_accumulation_gives_the_mean_gradient_of_the_effective_batch(tmp_path) -> None:
    # MarginMethod's loss is a mean over examples, so 2 micro-batches of 2 == 1 batch of 4.
    one, s1 = run(tmp_path, "one", budget=budget(max_steps=2, effective_batch=4, micro_batch=4))
    acc, s2 = run(tmp_path, "acc", budget=budget(max_steps=2, effective_batch=4, micro_batch=2))
    assert [r["loss"] for r in acc.log_rows] == pytest.approx([r["loss"] for r in one.log_rows], abs=1e-6)
    assert [r["grad_norm"] for r in acc.log_rows] == pytest.approx([r["grad_norm"] for r in one.log_rows],
                                                                   rel=1e-5)
    for (name, a), b in zip(s1.model.state_dict().items(), s2.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert acc.accounting["micro_batches"] == 4 and one.accounting["micro_batches"] == 2


def test_outputs_load_back_with_transformers_and_helper(tmp_path) -> None:
    result, student = run(tmp_path, "r", method=NLLMethod(), budget=budget(max_steps=2))
    out = tmp_path / "r" / "out"
    assert result.model_path == out / "model.safetensors" and (out / "config.json").is_file()
    accounting = json.loads((out / "accounting.json").read_text())
    assert accounting["optimizer_steps"] == 2 and accounting["plan"]["total_steps"] == 2
    assert accounting["peak_memory_bytes"] > 0 and accounting["wall_time_s"] > 0
    assert accounting["mfu"] is None  # CPU: no MFU

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out)
    fresh = load_trained_weights(make_tiny("llama", seed=3).model, out)
    trained = student.model.state_dict()
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
        assert torch.equal(loaded.state_dict()[name], trained[name]), name
    assert not student.model.training  # handed back ready for generation
    with pytest.raises(HarnessError, match="does not fit this model"):
        load_trained_weights(make_tiny("llama-wide").model, out)


def test_method_metrics_and_rows_are_logged(tmp_path) -> None:
    result, _ = run(tmp_path, "r", budget=budget(max_steps=2, checkpoint_every=1))
    row = result.log_rows[0]
    assert {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "margin"} <= set(row)
    assert row["loss"] == pytest.approx(torch.nn.functional.softplus(torch.tensor(-row["margin"])).item(), abs=0.05)


def test_checkpoints_hold_no_pickles_and_rerun_is_a_no_op(tmp_path) -> None:
    b = budget(max_steps=3, checkpoint_every=1)
    first, _ = run(tmp_path, "r", budget=b)
    latest = latest_checkpoint(tmp_path / "r" / "work")
    assert latest is not None and latest.name == "step-00000003"
    assert sorted(p.name for p in latest.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                        "rng.safetensors", "state.json"]
    assert len(list(latest.parent.iterdir())) == 2  # only the last two are kept
    again, student = run(tmp_path, "r", budget=b)
    assert again.resumed_from_step == 3 and untimed(again.log_rows) == untimed(first.log_rows)
    assert again.accounting["optimizer_steps"] == 3


def test_checkpoint_of_another_run_is_refused(tmp_path) -> None:
    run(tmp_path, "r", budget=budget(max_steps=2, checkpoint_every=1), stop_after_steps=1)
    with pytest.raises(HarnessError, match="belongs to a different run"):
        run(tmp_path, "r", budget=budget(max_steps=2, checkpoint_every=1, learning_rate=5e-4))


def test_missing_logging_backend_is_reported_not_fatal(tmp_path) -> None:
    try:
        import tensorboard  # noqa: F401

        have_tb = True
    except ImportError:
        have_tb = False
    result, _ = run(tmp_path, "r", budget=budget(max_steps=1), logging=LoggingConfig(tensorboard=True))
    if have_tb:
        assert any((tmp_path / "r" / "work" / "tensorboard").rglob("events.*"))
    else:
        assert any("pip install tensorboard" in m for m in result.messages)
    assert result.completed


class RecordingMargin(MarginMethod):
    seen: list[bool] = []

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], ctx: Any) -> Any:
        self.seen.append(bool(getattr(model, "is_activation_checkpointing", None)
                                or getattr(model, "is_gradient_checkpointing", False)))
        return super().loss(model, batch, ctx)


def test_gradient_checkpointing_gives_the_same_result(tmp_path) -> None:
    plain, s1 = run(tmp_path, "a", budget=budget(max_steps=1))
    ckpt, s2 = run(tmp_path, "b", method=RecordingMargin(), budget=budget(max_steps=1, gradient_checkpointing=True))
    assert RecordingMargin.seen and all(RecordingMargin.seen)  # it was on during training
    assert not getattr(s2.model, "is_activation_checkpointing", False)  # and off again afterwards
    assert ckpt.log_rows[0]["loss"] == pytest.approx(plain.log_rows[0]["loss"], abs=1e-6)
    for a, b in zip(s1.model.parameters(), s2.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_without_checkpoints_nothing_is_written_and_a_killed_run_starts_over_to_the_same_result(tmp_path) -> None:
    b = budget(max_steps=3)  # checkpoint_every: 0 (the default)
    whole, _ = run(tmp_path, "whole", budget=b)
    assert latest_checkpoint(tmp_path / "whole" / "work") is None
    run(tmp_path, "killed", budget=b, stop_after_steps=2)
    assert latest_checkpoint(tmp_path / "killed" / "work") is None
    again, _ = run(tmp_path, "killed", budget=b)
    assert again.resumed_from_step is None and untimed(again.log_rows) == untimed(whole.log_rows)
    trained = load_file(str(tmp_path / "killed" / "out" / "model.safetensors"))
    for name, tensor in load_file(str(tmp_path / "whole" / "out" / "model.safetensors")).items():
        assert torch.equal(trained[name], tensor), name
