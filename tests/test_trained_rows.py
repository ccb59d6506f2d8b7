"""Trained rows are answered by their trained weights on every backend.

A backend that loads weights from disk (vLLM) used to be pointed at the base student's directory for a
trained row, so every trained student answered like the untrained one. Here a vLLM double that really
loads the directory it is given and decodes greedily stands in for vLLM (the real engine is tested in
the vLLM tox env): its answers for a trained row must equal the `hf` backend's and differ from the
untrained student's.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch
from conftest import make_tiny

from harness.config import parse_experiment
from harness.models.base import GenerationRequest, LoadedModel, SamplingParams
from harness.models.chat import ChatFormatter
from harness.models.handles import trained_identity
from harness.models.hf_generator import HFGenerator
from harness.pipeline import Pipeline
from harness.store import read_jsonl


def disk_loading_vllm(calls: list[dict[str, Any]]) -> types.ModuleType:
    """vLLM's offline API over transformers: `LLM(model=dir, tokenizer=dir)` loads those directories."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    class SamplingParams_:  # noqa: N801 - vLLM's class name
        def __init__(self, **kwargs: Any) -> None:
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            calls.append(kwargs)
            tok = AutoTokenizer.from_pretrained(kwargs["tokenizer"])
            model = AutoModelForCausalLM.from_pretrained(kwargs["model"], dtype=torch.float32).eval()
            self.loaded = LoadedModel(model=model, tokenizer=tok, formatter=ChatFormatter(tok), identity={})

        def generate(self, prompts: list[Any], sampling_params: Any, use_tqdm: bool = True) -> list[Any]:
            out = []
            for prompt, sp in zip(prompts, sampling_params, strict=True):
                result = HFGenerator(self.loaded).generate(
                    [GenerationRequest(prompt["prompt_token_ids"], seed=0)],
                    SamplingParams(temperature=0.0, max_new_tokens=sp.max_tokens))[0]
                done = result.finished[0]
                ids = result.token_ids[0] + ([sp.stop_token_ids[0]] if done else [])  # vLLM keeps the stop id
                completions = [types.SimpleNamespace(index=j, token_ids=ids, finish_reason="stop" if done else "length")
                               for j in range(sp.n)]  # greedy only: n copies
                out.append(types.SimpleNamespace(outputs=completions))
            return out

    vllm = types.ModuleType("vllm")
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}  # type: ignore[attr-defined]
    vllm.LLM, vllm.SamplingParams, vllm.inputs = LLM, SamplingParams_, inputs  # type: ignore[attr-defined]
    return vllm


def test_trained_rows_answer_with_their_trained_weights_under_vllm(tmp_path: Path, monkeypatch: Any) -> None:
    # A student with a directory on disk, as every real model has (tiny models otherwise live in memory).
    student_dir = tmp_path / "student"
    base = make_tiny("llama", seed=0)
    base.model.save_pretrained(student_dir)
    base.tokenizer.save_pretrained(student_dir)

    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "vllm", disk_loading_vllm(calls))
    monkeypatch.setitem(sys.modules, "vllm.inputs", sys.modules["vllm"].inputs)
    data = {
        "name": "rows", "teacher": {"model": "tiny:llama", "seed": 1, "system_prompt": "Be brief."},
        "student": {"model": str(student_dir)},
        "prompts": {"source": "sharegpt", "count": 4, "max_prompt_chars": 100},
        "sampling": {"candidates": 2, "n": 2, "max_new_tokens": 8},
        "methods": [{"name": "sft", "params": {"preference": "teacher_logprob"}}],
        "budget": {"epochs": 2, "effective_batch": 2, "micro_batch": 2, "max_length": 64, "max_prompt_length": 48,
                   "learning_rate": 3e-2, "warmup_ratio": 0.0},
        "benchmarks": [{"name": "alpaca_eval2", "subset": 3, "max_new_tokens": 8},
                       {"name": "ifeval", "subset": 2, "max_new_tokens": 8}],
        "judge": {"backend": "local", "model": "tiny:llama"},
    }
    answers: dict[str, dict[str, list[str]]] = {}
    for backend in ("hf", "vllm"):
        pipe = Pipeline(parse_experiment({**data, "generation_backend": backend}), tmp_path / "run", progress=False)
        pipe.run()
        if backend == "vllm":
            # One engine per row for all its benchmarks (3 rows x 2 benchmarks), each shut down after use.
            assert len(calls) == pipe.engines.starts == 3 and pipe.engines.generator is None
        plan = pipe.build_plan()
        rows = {row.row: row for row in plan.rows}
        answers[backend] = {name: [a["output"] for a in read_jsonl(plan.answers(row, 0).artifact.path / "answers.jsonl")]
                            for name, row in rows.items() if name != "teacher"}
        trained = rows["sft"].train
        assert trained is not None
    assert answers["vllm"]["sft"] == answers["hf"]["sft"]
    assert answers["vllm"]["student (untrained)"] == answers["hf"]["student (untrained)"]
    assert answers["hf"]["sft"] != answers["hf"]["student (untrained)"]
    # The engine for the trained row loaded the train artifact's weights with the base model's tokenizer.
    engines = {(Path(c["model"]).resolve(), Path(c["tokenizer"]).resolve()) for c in calls}
    assert (trained.path.resolve(), student_dir.resolve()) in engines
    assert (student_dir.resolve(), student_dir.resolve()) in engines


def test_trained_identity_keeps_the_tokenizer_and_names_the_weights() -> None:
    base = {"model": "google/gemma-2-2b-it", "source": "hf", "path": "google/gemma-2-2b-it", "revision": "abc123",
            "weights": "abc123", "dtype": "bfloat16", "template": "t", "context": "c"}
    ident = trained_identity(base, "k1", Path("/runs/x/artifacts/train/sft-seed0-k1"))
    assert ident["path"] == "/runs/x/artifacts/train/sft-seed0-k1" and ident["trained"] == "k1"
    assert (ident["tokenizer_path"], ident["tokenizer_revision"]) == ("google/gemma-2-2b-it", "abc123")
    assert "revision" not in ident and "weights" not in ident and ident["dtype"] == "bfloat16"
    from harness.models.vllm_generator import VLLMGenerator

    tiny = make_tiny("llama", seed=0)
    kwargs = VLLMGenerator(LoadedModel(tiny.model, tiny.tokenizer, tiny.formatter, ident)).engine_kwargs()
    assert kwargs["model"] == ident["path"] and kwargs["tokenizer"] == "google/gemma-2-2b-it"
    assert kwargs["tokenizer_revision"] == "abc123" and "revision" not in kwargs


def test_student_and_teacher_samples_go_through_the_configured_backend(tmp_path: Path, monkeypatch: Any) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "vllm", disk_loading_vllm(calls))
    monkeypatch.setitem(sys.modules, "vllm.inputs", sys.modules["vllm"].inputs)
    exp = parse_experiment({
        "name": "samples", "teacher": {"model": "tiny:llama", "seed": 1, "system_prompt": "Be brief."},
        "student": {"model": "tiny:llama", "seed": 0},
        "prompts": {"source": "sharegpt", "count": 3, "max_prompt_chars": 100},
        "sampling": {"candidates": 2, "n": 2, "max_new_tokens": 6, "backend": "vllm"},
        "methods": [{"name": "seqkd"}], "judge": {"backend": "local", "model": "tiny:llama"},
    }, "test")
    pipe = Pipeline(exp, tmp_path, progress=False)
    plan = pipe.build_plan()
    for step in plan.steps:
        if step.stage in ("prompts", "samples", "signal"):
            pipe._run_step(step)
    assert len(calls) == 2  # the student's samples, then the teacher's own (SeqKD), each on its engine
    import json

    teacher = json.loads((plan.signals["teacher_samples"].artifact.path / "values.json").read_text())["samples"]
    assert len(teacher) == 3 and all(rec["responses"] and "finished" in rec for rec in teacher)


def test_backend_params_come_from_the_experiment_and_are_validated(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.models.vllm_generator import VLLMGenerator

    base = {"name": "p", "teacher": {"model": "tiny:llama"}, "student": {"model": "tiny:llama"},
            "methods": [{"name": "sft"}], "generation_backend": "vllm",
            "benchmarks": [{"name": "alpaca_eval2", "subset": 1}]}
    exp = parse_experiment({**base, "backends": {"vllm": {"tensor_parallel_size": 2, "kv_cache_gib": 1.5,
                                                           "max_model_len": 1024, "enforce_eager": True}}}, "t")
    tiny = make_tiny("llama", seed=0)
    ctx = Pipeline(exp, tmp_path, progress=False).ctx
    ctx.models._base["student"] = tiny  # the pool builds the backend from the student's handle
    kwargs = ctx.models.generator(ctx.student, "vllm").engine_kwargs()
    assert (kwargs["tensor_parallel_size"], kwargs["kv_cache_memory_bytes"], kwargs["max_model_len"]) == (
        2, int(1.5 * 2**30), 1024) and kwargs["enforce_eager"] is True
    assert isinstance(VLLMGenerator(tiny), VLLMGenerator)
    try:
        parse_experiment({**base, "backends": {"vllm": {"tensor_parallell_size": 2}}}, "t")
    except ConfigError as exc:
        assert "backends.vllm" in str(exc) and "tensor_parallell_size" in str(exc)
    else:
        raise AssertionError("an unknown backend param must be a config error")
    # Params that change answers are in the answers' key; memory settings are not.
    keys = {}
    for name, params in {"plain": {}, "memory": {"gpu_memory_utilization": 0.5},
                         "dtype": {"dtype": "float16"}}.items():
        pipe = Pipeline(parse_experiment({**base, "backends": {"vllm": params}}, "t"), tmp_path, progress=False)
        plan = pipe.build_plan()
        keys[name] = plan.answers(plan.rows[1], 0).artifact.key
    assert keys["plain"] == keys["memory"] != keys["dtype"]
