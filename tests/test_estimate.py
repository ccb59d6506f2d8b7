"""`--dry-run --estimate-on`: the priced plan, checked against real runs' accounting and the released run.

Token counts are checked against what the tiny preset's stages recorded (a real run, shared with
test_pipeline); wall times are not asserted here (a shared CPU makes them noisy): docs/performance.md
compares them, per stage and in total, for the measured runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.experiments import small_experiment

from harness.cli import main
from harness.config import load_experiment, parse_experiment
from harness.errors import HarnessError, ModelSourceError
from harness.estimate import estimate_plan, format_estimate
from harness.estimate.lengths import ASSUMED_RESPONSE_TOKENS
from harness.estimate.shapes import KNOWN_SHAPES, shape_from_config
from harness.estimate.table import _line
from harness.estimate.validate import artifact_label, measured_stages
from harness.pipeline import Pipeline
from harness.training.accounting import flops_train

LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
RELEASED_PAD_GPU_HOURS = 7.2884  # egangu/PAD README, training report (2 x A800), leaderboards/paper/


def _estimate(exp, run_dir: Path, on: str = "cpu"):
    pipe = Pipeline(exp, run_dir, progress=False)
    return estimate_plan(pipe.build_plan(), pipe.ctx, on)


def test_known_shapes_equal_the_published_configs() -> None:
    """The table's parameter counts are those of the published configs, built on the meta device."""
    from transformers import Gemma2Config, LlamaConfig

    configs = {
        "google/gemma-2-9b-it": Gemma2Config(hidden_size=3584, num_hidden_layers=42, num_attention_heads=16,
                                             num_key_value_heads=8, head_dim=256, intermediate_size=14336),
        "google/gemma-2-2b-it": Gemma2Config(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                                             num_key_value_heads=4, head_dim=256, intermediate_size=9216),
        "meta-llama/llama-3.1-8b-instruct": LlamaConfig(hidden_size=4096, num_hidden_layers=32,
                                                        num_attention_heads=32, num_key_value_heads=8,
                                                        intermediate_size=14336, vocab_size=128256),
        "meta-llama/llama-3.2-1b-instruct": LlamaConfig(hidden_size=2048, num_hidden_layers=16,
                                                        num_attention_heads=32, num_key_value_heads=8,
                                                        intermediate_size=8192, vocab_size=128256,
                                                        tie_word_embeddings=True),
        "huggingfacetb/smollm2-135m-instruct": LlamaConfig(hidden_size=576, num_hidden_layers=30,
                                                           num_attention_heads=9, num_key_value_heads=3,
                                                           intermediate_size=1536, vocab_size=49152,
                                                           tie_word_embeddings=True),
    }
    for name, config in configs.items():
        built, known = shape_from_config(config, "test"), KNOWN_SHAPES[name]
        assert (built.params, built.layers, built.attention_width, built.sliding_window) == (
            known.params, known.layers, known.attention_width, known.sliding_window), name
    assert KNOWN_SHAPES["smollm2-135m-instruct"].params == 134_515_008  # what the offline runs record


def test_estimate_tokens_match_the_tiny_preset_accounting(tiny_preset_run) -> None:
    exp, _, run_dir = tiny_preset_run
    est, measured = _estimate(exp, run_dir), measured_stages(run_dir)
    assert est.stages and all(s.done for s in est.stages)  # the plan of the finished run, stage for stage

    def meas(kind: str, label: str, tokens: str) -> float:
        return measured[(kind, label)].tokens[tokens]

    # A random tiny model almost never ends a sample: every one runs to the cap, so the estimate (cap each)
    # is the count, or a hair above it.
    samples = est.stage("samples", "samples")
    assert samples.generated == exp.prompts.count * exp.sampling.candidates * exp.sampling.max_new_tokens
    assert 0.95 * samples.generated <= meas("samples", "samples", "generated") <= samples.generated
    # Scored and trained tokens re-tokenize the sampled text. A random tiny model emits arbitrary bytes, and
    # invalid UTF-8 comes back as U+FFFD (3 bytes each): its 12-token samples re-tokenize to ~22 bytes, so
    # measured counts run up to ~20% above the estimate here (a real model's text round-trips: the offline
    # default's signal and training counts are within 5%, docs/performance.md).
    for stage in (s for s in est.stages if s.kind == "signal"):
        kind = "generated" if stage.label == "teacher_samples" else "scored"
        ratio = getattr(stage, kind) / meas("signal", stage.label, kind)
        assert 0.75 <= ratio <= 1.25, (stage.label, ratio)
    for stage in (s for s in est.stages if s.kind == "train"):
        # GKD's on-policy share is a coin per micro-batch (lmbda = 0.5 on average): looser there.
        low, high = (0.6, 1.6) if stage.label.startswith("gkd") else (0.75, 1.25)
        ratio = stage.trained / meas("train", stage.label, "trained")
        assert low <= ratio <= high, (stage.label, ratio)
        # FLOPs: the accounting's 6N per trained token plus the stated attention term (large for a 27k-param
        # model: 2 x layers x context x width is half its N at these lengths; ~1% for Gemma-2-2B).
        work = stage.work.works[0]
        attention = 2 * work.shape.layers * work.context * work.shape.attention_width
        assert work.kind == "train" and work.tokens == stage.trained
        assert work.flops == pytest.approx(flops_train(work.shape.params, round(stage.trained))
                                           + 6 * attention * stage.trained, rel=1e-3)
    answers = [s for s in est.stages if s.kind == "answers"]
    generated = sum(s.generated for s in answers)
    measured_answers = sum(meas("answers", artifact_label(s.label), "generated") for s in answers)
    assert 0.7 * generated <= measured_answers <= generated  # answers are capped, some end earlier


def test_mcq_pairs_follow_the_rule(tmp_path: Path) -> None:
    """Released: each unordered pair once (n(n-1)/2); debiased: both orders, twice the pairs. Same template
    and long responses, so the pairs dominate (the judge's context and question are encoded once per prompt)."""
    scored = {}
    for rule in ("released", "debiased"):
        data = small_experiment("mcq", prompts=4, samples=4, sample_tokens=300, methods=[{"name": "pad"}],
                                signals={"mcq": rule, "mcq_template": "default"}, budget={"micro_batch": 2})
        est = _estimate(parse_experiment(data, "test"), tmp_path / rule)
        scored[rule] = est.stage("signal", "mcq_preference").scored
    assert 1.85 < scored["debiased"] / scored["released"] < 2.0


def test_estimate_on_needs_dry_run(capsys) -> None:
    assert main(["run", str(LEADERBOARDS / "tiny.yaml"), "--estimate-on", "a800"]) == 2
    assert "--estimate-on prices the plan without running it and needs --dry-run" in capsys.readouterr().err
    assert main(["run", str(LEADERBOARDS / "tiny.yaml"), "--dry-run", "--estimate-on", "tpu"]) == 2
    assert "unknown accelerator; choose one of h100, a100, a800, h200, l4, cpu" in capsys.readouterr().err


def test_gemma_dry_run_prices_the_plan_offline(monkeypatch, tmp_path, capsys) -> None:
    """The paper's setting priced on A800s with no hub access: identities fall back to model names, shapes
    come from the known table; the printed totals are the estimate's, PAD's training within 2x of the
    released run's 7.29 GPU-hours."""
    from harness.models import sources
    from harness.stages import context

    def offline(spec, device=None):
        raise ModelSourceError(f"model {spec.model!r} is not available: HF_HUB_OFFLINE is set")

    monkeypatch.setattr(sources, "model_fingerprint", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    path = LEADERBOARDS / "gemma2-9b-to-2b.yaml"
    assert main(["run", str(path), "--dry-run", "--estimate-on", "a800"]) == 0
    captured = capsys.readouterr()
    assert "note: model 'google/gemma-2-9b-it' is not available here" in captured.err
    out = captured.out
    assert "to run   train       pad-released-seed0" in out  # the plan lines, as without an estimate
    assert "peak 312 TFLOP/s per gpu; assumed MFU train 35%" in out

    monkeypatch.setattr(context, "model_key", lambda spec: {"model": spec.model, "stub": True})
    est = _estimate(load_experiment(path), tmp_path / "run", "a800")
    total = _line("TOTAL", "", f"{len(est.stages)} stages", est.total("generated"), est.total("scored"),
                  est.total("trained"), est.total("flops"), est.total("hours"))
    assert total in out.splitlines()
    pad = est.stage("train", "pad-released-seed0")
    assert pad.trained == est.stage("train", "pad-ppd-seed0").trained  # one budget for every PAD row
    assert 0.5 < pad.hours / RELEASED_PAD_GPU_HOURS < 2.0
    # Gemma-2's sliding window: each of the 4 responses trains with its own prompt copy, as released.
    shapes = pad.work.works[0].shape
    assert not shapes.shares_prompts and shapes.params == 2_614_341_888
    assert est.judge_calls == 26 * (805 + 500 * 2 + 80 * 2)  # rows x (AlpacaEval, Arena-Hard both orders, MT-Bench)
    assert "arena_hard 500 items x 1 turn(s) (official size" in out or "arena_hard 500 items" in out


def test_responses_are_capped_by_the_assumed_length(tmp_path: Path) -> None:
    data = small_experiment("caps", prompts=4, samples=2, sample_tokens=4096,
                            budget={"micro_batch": 2, "max_length": 8192, "max_prompt_length": 4096})
    est = _estimate(parse_experiment(data, "test"), tmp_path)
    assert est.stage("samples", "samples").generated == 4 * 2 * ASSUMED_RESPONSE_TOKENS
    assert "responses: min(cap, 450)" in format_estimate(est)


def test_unknown_model_says_what_to_do(monkeypatch) -> None:
    from harness.config import ModelSpec
    from harness.estimate.shapes import shape_of

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="KNOWN_SHAPES"):
        shape_of(ModelSpec(model="no-such-org/no-such-model"))
