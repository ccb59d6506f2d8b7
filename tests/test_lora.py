"""LoRA students (`student.lora`, harness.training.lora): only adapters move, the stored model is the merged
W + B A alpha/r, the adapter loads in peft, resume and reruns are bitwise equal, DPO's reference is the base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_tiny
from helpers.training import MarginMethod, budget, make_groups
from safetensors.torch import load_file

from harness.config import LoraSpec
from harness.errors import HarnessError
from harness.training import train
from harness.training.checkpoint import latest_checkpoint
from harness.training.lora import attach_lora, merged_state_dict

pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LORA = LoraSpec(r=4, alpha=8.0)
TIMING_KEYS = {"time_s", "wall_s", "tokens_per_s"}


def run(tmp: Path, name: str, lora: LoraSpec | None = LORA, **kw: Any) -> tuple[Any, Any]:
    b = kw.pop("budget", None) or budget(epochs=3, effective_batch=4, micro_batch=2, learning_rate=1e-2)
    student = make_tiny("llama", seed=0)
    result = train(MarginMethod(), make_groups(8), student, b, 7, tmp / name / "work", tmp / name / "out",
                   progress=False, lora=lora, **kw)
    return result, student


def test_only_the_adapters_move_while_training(tmp_path: Path) -> None:
    student = make_tiny("llama", seed=0)
    base = {k: v.clone() for k, v in student.model.state_dict().items()}
    b = budget(epochs=3, effective_batch=4, micro_batch=2, learning_rate=1e-2, checkpoint_every=1)
    result = train(MarginMethod(), make_groups(8), student, b, 7, tmp_path / "work", tmp_path / "out",
                   progress=False, lora=LORA, stop_after_steps=3)
    assert not result.completed
    # peft put the adapters into the student's own modules: base weights sit under `.base_layer.`.
    state = student.model.state_dict()
    frozen = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    assert frozen.keys() == base.keys()
    for name, tensor in frozen.items():
        assert torch.equal(tensor, base[name]), name  # the base did not move at all
    moved = [k for k, v in state.items() if ".lora_B." in k and v.abs().sum() > 0]
    assert moved, "lora_B starts at 0 and must have been trained"
    assert {k for k, p in student.model.named_parameters() if p.requires_grad} == \
        {k for k in state if ".lora_" in k}
    # A checkpoint keeps the adapters only (the base is the student's own weights).
    saved = load_file(str(latest_checkpoint(tmp_path / "work") / "model.safetensors"))
    assert saved and all(".lora_" in k for k in saved)


def test_the_stored_model_is_the_base_plus_b_a_scale_and_the_adapter_loads_in_peft(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _ = run(tmp_path, "a")
    out = tmp_path / "a" / "out"
    trainable, params = result.accounting["student_trainable_params"], result.accounting["student_params"]
    assert params == sum(p.numel() for p in make_tiny("llama").model.parameters())
    assert trainable == 2 * 4 * sum(i + o for i, o in [(32, 32), (32, 16), (32, 16), (32, 32), (32, 64), (32, 64),
                                                       (64, 32)])  # tiny:llama's linears, r = 4, 2 layers
    # The frozen base's weight gradients are not computed: 4 N + 6 N_trainable per trained token.
    tokens = result.accounting["student_backward_tokens"]
    assert result.accounting["student_train_flops"] == (4 * params + 6 * trainable) * tokens
    merged = load_file(str(out / "model.safetensors"))
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and config["base_model_name_or_path"] == "tiny:llama"
    base = make_tiny("llama", seed=0).model.state_dict()
    scale = 8.0 / 4
    adapted = 0
    for name, weight in base.items():
        stem = name.removesuffix(".weight")
        a_key = f"base_model.model.{stem}.lora_A.weight"
        if a_key in adapter:
            expected = weight.float() + scale * adapter[a_key.replace("lora_A", "lora_B")] @ adapter[a_key]
            adapted += 1
        else:
            expected = weight.float()
        if name in merged:  # tied weights are stored once
            torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6, msg=name)
    assert adapted == 2 * 7  # all-linear: q, k, v, o, gate, up, down in each of the 2 layers; not the head

    # Both forms give the same model: the merged directory, and the base with peft's adapter on it.
    tiny = make_tiny("llama", seed=0)
    tiny.model.config.save_pretrained(out)  # (the tiny base has no directory of its own to load from)
    plain = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(tiny.model, str(out / "adapter")).eval()
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, peft_model(ids).logits, rtol=1e-5, atol=1e-5)


def test_killed_and_resumed_lora_run_equals_uninterrupted_and_reruns_are_bitwise(tmp_path: Path) -> None:
    b = budget(epochs=3, effective_batch=4, micro_batch=2, learning_rate=1e-2, checkpoint_every=2)
    full, _ = run(tmp_path, "full", budget=b)
    again, _ = run(tmp_path, "again", budget=b)
    killed, _ = run(tmp_path, "resumed", budget=b, stop_after_steps=3)
    assert not killed.completed
    torch.manual_seed(999)  # a fresh process's RNG
    resumed, _ = run(tmp_path, "resumed", budget=b)
    assert resumed.resumed_from_step == 2
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert untimed(resumed.log_rows) == untimed(full.log_rows) == untimed(again.log_rows)
    reference = load_file(str(tmp_path / "full/out/model.safetensors"))
    for other in ("again", "resumed"):
        for sub in ("model.safetensors", "adapter/adapter_model.safetensors"):
            a = load_file(str(tmp_path / "full/out" / sub))
            b2 = load_file(str(tmp_path / other / "out" / sub))
            assert a.keys() == b2.keys()
            assert all(torch.equal(a[k], b2[k]) for k in a), (other, sub)
    assert reference  # non-empty


def test_lora_and_full_fine_tuning_differ_and_the_initial_lora_student_is_the_base() -> None:
    """B = 0 at the start: the wrapped student's log-probs are the base model's (the cached DPO reference,
    the initial student's, is the base with the adapters disabled, as TRL computes it)."""
    base = make_tiny("llama", seed=0).model.eval()
    torch.manual_seed(0)
    wrapped = attach_lora(make_tiny("llama", seed=0).model, LORA).eval()
    ids = torch.tensor([[1, 9, 33, 7, 81, 2]])
    with torch.no_grad():
        expected = base(ids).logits
        assert torch.equal(wrapped(ids).logits, expected)
        with wrapped.disable_adapter():
            assert torch.equal(wrapped(ids).logits, expected)
    # merged_state_dict (what GKD's vLLM engine is sent) names the base's weights, adapters added.
    for p in wrapped.parameters():
        if p.requires_grad:
            p.data.add_(0.01)
    merged = merged_state_dict(wrapped)
    assert merged.keys() == base.state_dict().keys()
    q = "model.layers.0.self_attn.q_proj.weight"
    layer = wrapped.get_base_model().model.layers[0].self_attn.q_proj
    expected_q = layer.base_layer.weight + (8.0 / 4) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    torch.testing.assert_close(merged[q], expected_q)
    assert not torch.equal(merged[q], base.state_dict()[q])


def test_target_modules_that_name_nothing_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="student.lora"):
        run(tmp_path, "bad", lora=LoraSpec(r=2, target_modules=("no_such_proj",)))


def test_every_kind_of_method_trains_a_lora_student_through_the_pipeline(tmp_path: Path) -> None:
    """PAD, DPO (cached reference) and GKD (on-policy samples from the LoRA student) on a tiny experiment:
    the train keys carry the adapter settings, the shared precompute (samples, signals) is the full
    fine-tuning run's, and each stored student is a complete merged model the harness answers with."""
    from harness import api
    from harness.pipeline import Pipeline

    overrides = ["methods=[{name: pad, params: {mcq_filter: false}}, {name: dpo}, {name: gkd}]",
                 "benchmarks=[{name: alpaca_eval2, subset: 2, max_new_tokens: 8}]"]
    full = api.load(Path(__file__).parents[1] / "leaderboards" / "tiny.yaml", overrides=overrides)
    lora = api.load(full, overrides=["student.lora={r: 4, alpha: 8}"])

    def keys(exp: Any) -> dict[tuple[str, str], str]:
        plan = Pipeline(exp, tmp_path / "run", progress=False).build_plan()
        return {(s.kind, s.label): s.artifact.key for s in plan.steps}

    full_keys, lora_keys = keys(full), keys(lora)
    assert full_keys.keys() == lora_keys.keys()
    for (kind, label), key in full_keys.items():
        if kind in ("samples", "signal", "prompts", "trainset") or label.startswith(("teacher", "student")):
            assert lora_keys[(kind, label)] == key, (kind, label)
        elif kind == "train":
            assert lora_keys[(kind, label)] != key, label

    results = api.run(lora, tmp_path / "run", progress=False)
    rows = {r.row: r for r in results.raw.rows}
    for method in ("pad", "dpo", "gkd"):
        train_dir = tmp_path / "run" / rows[method].artifacts["train"]
        context = json.loads((train_dir / "pad_harness.json").read_text())
        assert context["lora"]["r"] == 4 and context["lora"]["adapter"] == "adapter/"
        assert (train_dir / "adapter" / "adapter_model.safetensors").is_file()
        manifest = json.loads((train_dir / "manifest.json").read_text())
        assert {"model.safetensors", "adapter/adapter_model.safetensors"} <= set(manifest["files"])
        assert "alpaca_eval2" in rows[method].benchmarks


def test_a_quantized_base_trains_adapters_and_stores_the_dequantized_merge(tmp_path: Path) -> None:
    """QLoRA's path with torchao's int8 (the quantization that runs on a CPU; nf4 is bitsandbytes, CUDA
    only): the base stays quantized while training, the stored model is unquantized fp32 and answers as the
    trained model did (dequantized W + B A alpha/r), and trained rows load it without quantization."""
    pytest.importorskip("torchao")
    from peft import PeftModel

    from harness.config import ModelSpec
    from harness.models.sources import load_model
    from harness.training.checkpoint import load_trained_weights

    quantized = ModelSpec(model="tiny:llama-wide", quantization="int8")
    plain = ModelSpec(model="tiny:llama-wide")
    student = load_model(quantized, "cpu")
    q_proj = student.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.weight).__module__.startswith("torchao")
    b = budget(epochs=2, effective_batch=4, micro_batch=2, learning_rate=1e-2)
    result = train(MarginMethod(), make_groups(8), student, b, 7, tmp_path / "work", tmp_path / "out",
                   progress=False, lora=LORA, merge_base=lambda: load_model(plain, "cpu").model)
    assert result.completed
    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float32}

    merged = load_trained_weights(load_model(plain, "cpu").model, tmp_path / "out").eval()
    trained = PeftModel.from_pretrained(load_model(quantized, "cpu").model, str(tmp_path / "out" / "adapter")).eval()
    original = load_model(plain, "cpu").model.eval()
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.no_grad():
        got, want, before = merged(ids).logits, trained(ids).logits, original(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - before).abs().max() > 1e-3  # training moved it (the comparison can fail)
