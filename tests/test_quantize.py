"""Quantized models (`quantization:` on a model, harness.models.quantize): torchao's int8 on tiny models (the
CPU path, tested for real), its identity in the cache keys, the refusals (nf4 on CPUs, a missing package,
a quantized model served by vLLM), vLLM's own `quantization` param in its key, and a whole run with an int8
teacher. bitsandbytes is not installable here: its path is covered only as far as choosing it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import plan_keys
from helpers.experiments import small_experiment

from harness.config import JudgeSpec, ModelSpec, parse_experiment
from harness.errors import ConfigError, ModelSourceError
from harness.models import quantize
from harness.models.scoring import Scorer
from harness.models.sources import load_model, model_fingerprint

pytest.importorskip("torchao", reason="the quantization tests need torchao: pip install 'pad-harness[quantization]'")
pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER = ModelSpec(model="tiny:llama", seed=1)
INT8 = TEACHER.model_copy(update={"quantization": "int8"})


def _experiment(name: str, **extra) -> dict:
    """A small experiment (one micro-batch a step, as `validate` requires) with `extra` top-level keys."""
    return small_experiment(name, budget={"micro_batch": 2}, **extra)


def _groups(loaded) -> list:
    encode = loaded.tokenizer.encode
    prompts = ["Hello there", "What is 2+2?", "Name a colour."]
    responses = ["Four.", "Blue, I think.", "Hi! How can I help you today?"]
    return [(loaded.formatter.prompt_ids([{"role": "user", "content": p}]),
             [list(encode(r, add_special_tokens=False)) for r in responses]) for p in prompts]


def test_an_int8_teacher_holds_int8_weights_and_scores_close_to_but_not_as_the_fp32_one() -> None:
    full, int8 = load_model(TEACHER), load_model(INT8)
    weight = int8.model.model.layers[0].mlp.up_proj.weight
    assert type(weight).__name__ == "Int8Tensor" and weight.qdata.dtype == torch.int8
    assert type(full.model.model.layers[0].mlp.up_proj.weight) is torch.nn.Parameter
    # Embeddings and the output head stay in the load dtype, as transformers' quantizers leave them.
    assert int8.model.get_output_embeddings().weight.dtype == torch.float32
    assert quantize.weight_bytes(int8.model) < quantize.weight_bytes(full.model)

    groups = _groups(full)
    reference = [s.mean_logprob for g in Scorer(full).score_groups(groups) for s in g]
    quantized = [s.mean_logprob for g in Scorer(int8).score_groups(groups) for s in g]
    gaps = [abs(a - b) for a, b in zip(reference, quantized, strict=True)]
    assert max(gaps) < 0.01  # measured up to 2e-4 on these responses
    assert max(gaps) > 0  # the weights really are rounded


def test_quantization_is_part_of_the_identity_and_unquantized_identities_are_unchanged() -> None:
    plain, quantized = model_fingerprint(TEACHER), model_fingerprint(INT8)
    assert quantized == plain | {"quantization": "int8/torchao"}
    # Exactly the keys an identity had before quantization existed: no key of an existing run moves.
    assert set(plain) == {"model", "dtype", "source", "seed", "template", "context", "chat_format", "date_string"}
    assert load_model(INT8).identity == quantized and load_model(TEACHER).identity == plain


def test_a_quantized_teacher_moves_exactly_the_keys_that_read_it(tmp_path: Path) -> None:
    exp = plan_keys.load_preset("tiny")
    quantized = exp.model_copy(update={"teacher": exp.teacher.model_copy(update={"quantization": "int8"})})
    before = plan_keys.plan_steps(exp, tmp_path / "a")
    after = plan_keys.plan_steps(quantized, tmp_path / "b")
    moved = {line.split(": ", 1)[0] for line in plan_keys.changes(before, after)}
    assert any(step.startswith("signal") for step in moved) and any(step.startswith("train") for step in moved)
    assert any(step.startswith("answers") and "teacher" in step for step in moved)
    # The untrained student's answers and the prompts never read the teacher.
    assert not any("student (untrained)" in step or step.startswith("prompts") for step in moved)


def test_nf4_on_a_cpu_is_refused_in_one_line_that_says_what_to_do() -> None:
    with pytest.raises(ModelSourceError) as err:
        load_model(TEACHER.model_copy(update={"quantization": "nf4"}), device="cpu")
    message = str(err.value)
    assert "\n" not in message and "needs a CUDA GPU" in message and "quantization: int8" in message


def test_validate_refuses_nf4_on_a_cpu_run_and_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.preflight import preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _experiment("nf4", teacher={"model": "tiny:llama", "seed": 1, "quantization": "nf4"})
    with pytest.raises(ConfigError) as err:
        preflight(parse_experiment(data, "exp.yaml"), "exp.yaml")
    assert str(err.value).startswith("exp.yaml: teacher.quantization: quantization nf4")
    assert "\n" not in str(err.value)

    monkeypatch.setattr(quantize, "_installed", lambda package: False)
    data = _experiment("int8", teacher={"model": "tiny:llama", "seed": 1, "quantization": "int8"})
    with pytest.raises(ConfigError, match=r"int8 needs torchao .*pip install 'pad-harness\[quantization\]'"):
        preflight(parse_experiment(data, "exp.yaml"), "exp.yaml")
    with pytest.raises(ModelSourceError, match=r"pad-harness\[quantization\]"):
        load_model(INT8)


def test_bitsandbytes_is_chosen_on_cuda_when_installed_and_never_for_what_it_cannot_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice only: bitsandbytes is not installable here, so loading with it is not tested."""
    monkeypatch.setattr(quantize, "_installed", lambda package: True)
    hub = ModelSpec(model="org/model", quantization="int8")
    assert quantize.implementation(hub, "cuda") == quantize.BITSANDBYTES
    assert quantize.implementation(hub, "cpu") == quantize.TORCHAO
    # An offloaded model moves between host and GPU, which bitsandbytes weights cannot: torchao's int8 does.
    assert quantize.implementation(hub.model_copy(update={"offload": True}), "cuda") == quantize.TORCHAO
    assert quantize.implementation(INT8, "cuda") == quantize.TORCHAO  # built in memory: torchao only
    nf4 = hub.model_copy(update={"quantization": "nf4"})
    assert quantize.implementation(nf4, "cuda:0") == quantize.BITSANDBYTES
    options = quantize.loading_options(nf4, quantize.BITSANDBYTES, "cuda:0", torch.bfloat16)
    assert options["device_map"] == "cuda:0" and options["quantization_config"].bnb_4bit_quant_type == "nf4"
    with pytest.raises(ModelSourceError, match="remove `offload`"):
        quantize.implementation(nf4.model_copy(update={"offload": True}), "cuda")


def test_vllm_quantization_enters_the_backend_key_only_when_set() -> None:
    from harness.models.pool import backend_key
    from harness.models.vllm_generator import VLLMParams

    assert backend_key({}, "vllm") == {"backend": "vllm", "dtype": None, "max_model_len": None}  # as before
    assert backend_key({"vllm": {"quantization": "fp8"}}, "vllm")["quantization"] == "fp8"
    assert VLLMParams(quantization="awq").engine_kwargs()["quantization"] == "awq"
    assert "quantization" not in VLLMParams().engine_kwargs()


def test_a_quantized_model_served_by_vllm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.models.vllm_generator import VLLMGenerator
    from harness.preflight import preflight

    data = _experiment("vllm", teacher={"model": "tiny:llama", "seed": 1, "quantization": "int8"},
                            sampling={"sampler": "teacher", "backend": "vllm", "candidates": 2, "n": 2,
                                      "max_new_tokens": 6})
    with pytest.raises(ConfigError, match=r"teacher.quantization: int8 .* sampling.backend 'vllm' loads the "
                                          r"weights itself.*backends.vllm.quantization"):
        preflight(parse_experiment(data, "exp.yaml"), "exp.yaml")
    with pytest.raises(ModelSourceError, match="backends.vllm.quantization"):
        VLLMGenerator(load_model(INT8)).engine_kwargs()


def test_a_local_judge_loads_its_model_quantized_from_its_params() -> None:
    from harness.judges.choice import judge_key
    from harness.judges.local import LocalJudge

    plain = JudgeSpec(backend="local", model="tiny:llama")
    int8 = plain.model_copy(update={"params": {"quantization": "int8"}})
    assert "params" not in judge_key(plain) and judge_key(int8)["params"] == {"quantization": "int8"}
    assert LocalJudge.from_spec(int8, int8.params).identity["model"]["quantization"] == "int8/torchao"
    nf4 = plain.model_copy(update={"params": {"quantization": "nf4"}})
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in (LocalJudge.preflight(nf4) or "")


def test_a_run_with_an_int8_teacher_trains_and_evaluates(tmp_path: Path) -> None:
    from harness.pipeline import Pipeline

    data = small_experiment("int8-teacher", teacher={"model": "tiny:llama", "seed": 1, "quantization": "int8"},
                            # gkd scores its on-policy samples with the (quantized) teacher while it trains
                            methods=[{"name": "pad", "params": {"mcq_filter": False}}, {"name": "kd"},
                                     {"name": "gkd", "params": {"lmbda": 1.0}}],
                            signals={"topk": 4}, budget={"max_steps": 1, "micro_batch": 2, "learning_rate": 1e-3,
                                                         "warmup_ratio": 0.0})
    results = Pipeline(parse_experiment(data, "test"), tmp_path / "run", progress=False).run()
    rows = {row.row: row for row in results.rows}
    assert {"teacher", "pad", "kd", "gkd"} <= set(rows)
    for method in ("pad", "kd", "gkd"):
        assert rows[method].accounting["optimizer_steps"] == 1
    assert rows["gkd"].accounting["teacher_forward_tokens_online"] > 0
    for row in rows.values():
        assert row.benchmarks["alpaca_eval2"].answers == 2
    assert "int8/torchao" in (tmp_path / "run" / "results.json").read_text()
