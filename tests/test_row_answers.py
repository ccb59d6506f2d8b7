"""A row's greedy answers to every benchmark decoded together (harness.stages.row_answers): the same answers
and accounting as each benchmark decoding alone, fewer decode passes."""

from __future__ import annotations

import json

import pytest
from helpers.experiments import small_experiment

from harness.config import ModelSpec, parse_experiment
from harness.models.base import GenerationRequest, SamplingParams
from harness.models.hf_generator import HFGenerator
from harness.models.sources import load_model
from harness.pipeline import Pipeline
from harness.stages.row_answers import PrefetchedGenerator


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec(model="tiny:llama", seed=0))


def _prompts(n: int, shared: int = 0) -> list[list[int]]:
    """n prompts of 3, 9, 15, ... tokens (several length buckets), after `shared` tokens they all start with."""
    return [[40 + j % 50 for j in range(shared)] + [5 + (7 * i + 3 * j) % 90 for j in range(3 + 6 * i)]
            for i in range(n)]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("shared", [0, 20])
def test_each_request_stops_at_its_own_limit_with_the_answer_it_gets_alone(tiny, temperature, shared):
    """Prompts prefilled in length buckets (a shared prefix once per bucket), rows that reach their limit
    leaving the batch (a quarter at a time): every row gets the answer it gets alone."""
    gen = HFGenerator(tiny, batch_size=8)
    prompts, limits = _prompts(5, shared), [2, 9, 5, 9, 3]
    mixed = gen.generate([GenerationRequest(p, seed=i, n=2, max_new_tokens=m)
                          for i, (p, m) in enumerate(zip(prompts, limits, strict=True))],
                         SamplingParams(temperature=temperature, max_new_tokens=1))
    for i, (p, m, out) in enumerate(zip(prompts, limits, mixed, strict=True)):
        [alone] = HFGenerator(tiny, batch_size=1).generate([GenerationRequest(p, seed=i, n=2)],
                                                           SamplingParams(temperature=temperature, max_new_tokens=m))
        assert out.token_ids == alone.token_ids and out.finished == alone.finished
        assert all(len(ids) == m for ids in out.token_ids)  # a random tiny model never ends its turn this early


class _Counting(HFGenerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def generate(self, requests, params, progress=None):
        self.calls.append(len(requests))
        return super().generate(requests, params, progress)


def test_prefetched_answers_are_served_counted_and_sampling_passes_through(tiny):
    inner = _Counting(tiny, batch_size=8)
    gen = PrefetchedGenerator(inner)
    prompts = _prompts(5)
    gen.prefetch([GenerationRequest(p, seed=0, max_new_tokens=4 + i) for i, p in enumerate(prompts)])
    assert inner.calls == [5] and gen.generated_tokens == 0  # nothing handed out yet
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
    served = gen.generate([GenerationRequest(prompts[2], seed=7)], greedy)
    assert inner.calls == [5]  # served from the prefetched answers
    [alone] = HFGenerator(tiny).generate([GenerationRequest(prompts[2], seed=0)], greedy)
    assert served[0].token_ids == alone.token_ids
    assert gen.generated_tokens == len(alone.token_ids[0]) + int(alone.finished[0])
    # a length nobody prefetched, and a sampled request, go to the backend
    gen.generate([GenerationRequest(prompts[2], seed=0)], SamplingParams(temperature=0.0, max_new_tokens=3))
    gen.generate([GenerationRequest(prompts[0], seed=0)], SamplingParams(temperature=1.0, max_new_tokens=4))
    assert inner.calls == [5, 1, 1]


def _answers(run_dir) -> dict[str, str]:
    return {p.parent.name.rsplit("-", 1)[0]: p.read_text() for p in sorted(run_dir.glob("artifacts/answers/*/answers.jsonl"))}


def test_pipeline_answers_equal_those_of_each_benchmark_alone(tmp_path, monkeypatch):
    data = small_experiment("rows", budget={"micro_batch": 1}, benchmarks=[
        {"name": "alpaca_eval2", "subset": 2, "max_new_tokens": 5},
        {"name": "ifeval", "subset": 3, "max_new_tokens": 7},
        {"name": "gsm8k", "subset": 2, "max_new_tokens": 6, "params": {"protocol": "zeroeval"}}])
    calls: list[int] = []
    original = HFGenerator.generate

    def counting(self, requests, params, progress=None):
        calls.append(len(requests))
        return original(self, requests, params, progress)

    monkeypatch.setattr(HFGenerator, "generate", counting)
    Pipeline(parse_experiment(data, "rows"), run_dir=tmp_path / "together").run()
    together_calls = list(calls)
    # nothing prefetched: each benchmark decodes its own items, as before
    monkeypatch.setattr(PrefetchedGenerator, "prefetch", lambda self, requests, progress=None: None)
    calls.clear()
    Pipeline(parse_experiment(data, "rows"), run_dir=tmp_path / "alone").run()
    together, alone = _answers(tmp_path / "together"), _answers(tmp_path / "alone")
    assert len(together) == 9 and together == alone  # 3 rows (teacher, untrained, sft) x 3 benchmarks, byte for byte
    # each row: one decode call for its 7 items, instead of one per benchmark
    assert together_calls.count(7) == 3 and 7 not in calls and len(calls) == len(together_calls) + 3 * 2
    # each benchmark's accounting holds its own answers' tokens, as when it decoded alone
    assert _tokens(tmp_path / "together") == _tokens(tmp_path / "alone") and all(_tokens(tmp_path / "alone").values())


def _tokens(run_dir) -> dict[str, int]:
    return {p.parent.name: json.loads(p.read_text())["accounting"]["eval_generation_tokens"]
            for p in run_dir.glob("artifacts/answers/*/manifest.json")}
