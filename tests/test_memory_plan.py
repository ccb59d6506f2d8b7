"""The memory plan: golden figures of the formulas, the levers, the printed table, and the run gate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers.experiments import small_experiment

from harness import api
from harness.cli import main
from harness.config import LoraSpec, load_experiment, parse_experiment
from harness.errors import HarnessError
from harness.estimate import estimate_plan, format_estimate
from harness.estimate import gate as gate_module
from harness.estimate.hardware import accelerator
from harness.estimate.memory import TrainingInputs, training_parts
from harness.estimate.shapes import KNOWN_SHAPES, PUBLISHED_PARAMS, shape_from_config
from harness.pipeline import Pipeline

LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
GEMMA_2B = KNOWN_SHAPES["google/gemma-2-2b-it"]
GiB = 2**30


def test_table_fields_reproduce_the_published_parameter_counts() -> None:
    for shape, published in PUBLISHED_PARAMS.items():
        assert shape.params == published, shape.source


def test_config_and_table_agree_on_what_memory_needs() -> None:
    """SmolLM2's config built on the meta device gives the table's widths, vocabulary and linear layers."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192)
    built, known = shape_from_config(config, "test"), KNOWN_SHAPES["smollm2-135m-instruct"]
    fields = ("params", "hidden", "intermediate", "vocab", "heads", "kv_width", "tied_embeddings",
              "norms_per_layer", "eager_attention", "context")
    assert {f: getattr(built, f) for f in fields} == {f: getattr(known, f) for f in fields}
    assert sorted(built.linears) == sorted(known.linears)


def test_full_fine_tuning_golden_figures() -> None:
    """Gemma-2-2B, bf16 load, bf16 autocast, 2 rows of 100 tokens, no checkpointing: by hand from the formulas."""
    p, h, inter, v = 2_614_341_888, 2304, 9216, 256_000
    t = TrainingInputs(rows=2, width=100, load_bytes=2, autocast16=True, checkpointing=False)
    parts = dict(training_parts(GEMMA_2B, t))
    assert parts["student as loaded (the pool's copy)"] == 2 * p
    assert parts["fp32 master weights"] == 4 * p and parts["gradients (fp32)"] == 4 * p
    assert parts["AdamW moments (2 x fp32)"] == 8 * p
    assert parts["16-bit autocast weight copies"] == 2 * p  # tied embeddings: the head's weight is cast
    per_layer = 2 * (2 * 2048 + 2 * 1024 + 4 * inter) + 4 * (12 + 2) * h + 8 * 100 * 8  # eager scores: 8 heads
    assert parts["activations"] == 200 * (26 * per_layer + 14 * h)
    assert parts["logits (fp32 log-softmax)"] == 200 * v * 14
    weights_and_state = sum(b for name, b in parts.items() if name not in ("activations", "logits (fp32 log-softmax)"))
    assert weights_and_state == 20 * p  # 16 B/param trained + the autocast copy + the pool's bf16 student


def test_lora_golden_figures_and_lower_than_full() -> None:
    p, r = 2_614_341_888, 16
    per_layer = (2304 + 2048) * 2 + (2304 + 1024) * 2 + (2304 + 9216) * 3  # q,o; k,v; gate,up,down
    assert GEMMA_2B.lora_params(LoraSpec(r=r)) == r * per_layer * 26
    assert GEMMA_2B.lora_params(LoraSpec(r=r, target_modules=("q_proj", "v_proj"))) == r * (4352 + 3328) * 26
    full = TrainingInputs(rows=2, width=100, load_bytes=2, autocast16=True, checkpointing=False)
    lora = TrainingInputs(rows=2, width=100, load_bytes=2, autocast16=True, checkpointing=False, lora=LoraSpec(r=r))
    lora_parts = dict(training_parts(GEMMA_2B, lora))
    adapters = next(b for name, b in lora_parts.items() if name.startswith("LoRA adapters"))
    assert adapters == 16 * r * per_layer * 26
    assert lora_parts["frozen base (the copy that trains)"] == 2 * p  # not upcast
    qlora = TrainingInputs(rows=2, width=100, load_bytes=2, autocast16=True, checkpointing=False,
                           lora=LoraSpec(r=r), quantization="nf4")
    linear = GEMMA_2B.linear_params
    assert dict(training_parts(GEMMA_2B, qlora))["frozen base (the copy that trains)"] == (
        linear * 0.5625 + (p - linear) * 2)
    totals = [sum(b for _, b in training_parts(GEMMA_2B, x)) for x in (full, lora, qlora)]
    assert totals[0] > totals[1] > totals[2]


def test_checkpointing_and_sharding_lower_the_training_estimate() -> None:
    base = TrainingInputs(rows=8, width=2048, load_bytes=2, autocast16=True, checkpointing=False)
    total = lambda t: sum(b for _, b in training_parts(GEMMA_2B, t))  # noqa: E731
    assert total(TrainingInputs(**{**base.__dict__, "checkpointing": True})) < total(base)
    assert total(TrainingInputs(**{**base.__dict__, "shards": 4})) == pytest.approx(
        total(base) - 0.75 * 16 * GEMMA_2B.params)


def _paper_estimate(tmp_path: Path, on: str, overrides: tuple[str, ...] = ()):
    exp = load_experiment(LEADERBOARDS / "gemma2-9b-to-2b.yaml", overrides)
    pipe = Pipeline(exp, tmp_path / "run", progress=False, named_identities=True)  # offline: named models
    return estimate_plan(pipe.build_plan(project_selections=True), pipe.ctx, on)


def test_levers_each_lower_the_estimate_and_say_what_they_print(tmp_path: Path) -> None:
    """The paper setting on one H100: PAD's training does not fit; every lever lowers it, and setting a
    lever with --set gives the figure the lever printed."""
    est = _paper_estimate(tmp_path, "h100")
    memory = est.stage("train", "pad-ppd-seed0").memory
    assert memory is not None and not memory.fits
    assert memory.capacity == accelerator("h100").memory_bytes
    names = [what for what, _ in memory.levers]
    for expected in ("--set budget.micro_batch=1", "--set student.lora.r=16", "--set teacher.quantization=int8",
                     "--set teacher.offload=true", "FSDP / ZeRO-3 over"):
        assert any(n.startswith(expected) for n in names), (expected, names)
    assert all(size < memory.memory.total for _, size in memory.levers)
    for what, size in memory.levers:
        if what.startswith(("--set ", "together: --set")):
            settings = tuple(re.findall(r"--set (\S+)", what))
            again = _paper_estimate(tmp_path, "h100", settings).stage("train", "pad-ppd-seed0").memory
            assert again is not None and again.memory.total == pytest.approx(size), what
    text = format_estimate(est)
    assert "DOES NOT FIT train pad-ppd-seed0" in text
    assert "--set budget.micro_batch=1 ->" in text and "memory GiB" in text


def test_the_paper_setting_fits_one_gpu_with_the_levers(tmp_path: Path) -> None:
    """docs/multi-gpu.md "One GPU": the recipes there fit every stage by the estimator."""
    on_80 = ("student.lora.r=16", "teacher.quantization=int8", "budget.micro_batch=1", "teacher.offload=true")
    on_24 = (*on_80, "student.quantization=nf4", "budget.max_length=1024", "budget.max_prompt_length=768",
             "signals.batch_size=2", "backends.vllm.max_model_len=4096")
    for on, levers in (("h100", on_80), ("l4", on_24)):
        est = _paper_estimate(tmp_path, on, levers)
        assert all(s.memory is None or s.memory.fits for s in est.stages), [
            (s.label, s.memory.memory.total / GiB) for s in est.stages if s.memory and not s.memory.fits]
        assert not _paper_estimate(tmp_path, on).stage("train", "pad-ppd-seed0").memory.fits  # as released


def _tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(small_experiment("memgate", budget={"micro_batch": 2})))
    return path


class _Reached(Exception):
    """Raised where the first stage would run: the gate let the run through."""


@pytest.fixture
def no_stage_runs(monkeypatch):
    class Runner:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def run(self, *args, **kwargs) -> None:
            raise _Reached

    monkeypatch.setattr("harness.pipeline.PlanRunner", Runner)


def test_the_run_gate_stops_before_any_stage_and_the_option_goes_on(tmp_path: Path, monkeypatch,
                                                                     no_stage_runs) -> None:
    monkeypatch.setattr(gate_module, "device_capacity_bytes", lambda: (1e5, False))  # 100 kB of memory
    exp = parse_experiment(small_experiment("memgate", budget={"micro_batch": 2}), "test")
    with pytest.raises(HarnessError, match=r"memory plan: train sft-seed0: needs .* GiB > 9\.31e-05 GiB") as info:
        api.run(exp, tmp_path / "run", progress=False)
    assert "--set budget.micro_batch" not in str(info.value) or "->" in str(info.value)
    assert "--ignore-memory-plan" in str(info.value)
    assert not (tmp_path / "run" / "artifacts").exists()  # nothing ran
    with pytest.raises(_Reached):
        api.run(exp, tmp_path / "run", progress=False, ignore_memory_plan=True)


def test_the_cli_flag(tmp_path: Path, monkeypatch, no_stage_runs, capsys) -> None:
    monkeypatch.setattr(gate_module, "device_capacity_bytes", lambda: (1e5, False))
    path = _tiny_file(tmp_path)
    assert main(["run", str(path), "--run-dir", str(tmp_path / "a"), "--quiet"]) == 2
    assert "memory plan: train sft-seed0" in capsys.readouterr().err
    with pytest.raises(_Reached):
        main(["run", str(path), "--run-dir", str(tmp_path / "a"), "--quiet", "--ignore-memory-plan"])


def test_a_roomy_device_passes_the_gate(tmp_path: Path, monkeypatch, no_stage_runs) -> None:
    monkeypatch.setattr(gate_module, "device_capacity_bytes", lambda: (24 * GiB, False))
    with pytest.raises(_Reached):
        api.run(parse_experiment(small_experiment("memgate", budget={"micro_batch": 2}), "test"), tmp_path / "run", progress=False)


def test_cached_training_is_not_gated(tiny_preset_run, monkeypatch) -> None:
    """Only stages still to run count: a finished run passes whatever the capacity."""
    exp, _, run_dir = tiny_preset_run
    pipe = Pipeline(exp, run_dir, progress=False)
    plan = pipe.build_plan()
    assert any(s.kind == "train" for s in plan.steps) and all(s.done for s in plan.steps if s.kind == "train")
    monkeypatch.setattr(gate_module, "device_capacity_bytes", lambda: (1.0, False))
    gate_module.check_memory_plan(plan, pipe.ctx)  # no error
    assert gate_module.pending_training_memory(plan, pipe.ctx, 1.0, False) == []


@pytest.mark.smollm
def test_the_offline_default_fits_this_machine(tmp_path: Path) -> None:
    exp = load_experiment(LEADERBOARDS / "smol.yaml")
    pipe = Pipeline(exp, tmp_path / "run", progress=False)
    capacity, on_gpu = gate_module.device_capacity_bytes()
    priced = gate_module.pending_training_memory(pipe.build_plan(), pipe.ctx, capacity, on_gpu)
    assert len(priced) == len(exp.methods) and all(memory.fits for _, memory in priced)
    assert all(1 * GiB < memory.memory.total < 8 * GiB for _, memory in priced)  # measured 3.0-3.7 GiB


def test_dry_run_of_the_tiny_preset_prints_the_memory_column(tmp_path: Path, capsys) -> None:
    assert main(["run", str(LEADERBOARDS / "tiny.yaml"), "--dry-run", "--estimate-on", "cpu",
                 "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "memory GiB" in out and "capacity 24 GiB per machine" in out
    priced = out[out.index("estimate on"):]
    train_lines = [line for line in priced.splitlines() if line.strip().startswith("to run   train ")]
    assert train_lines and all(line.rstrip().endswith("/24") for line in train_lines)
