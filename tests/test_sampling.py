"""The sampling stage: edit distance, greedy max-min diversity selection, seeds, the distinctness filter."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest
import torch
from conftest import make_tiny

from harness.config import SamplingConfig
from harness.models.base import GenerationOutput, Generator
from harness.models.hf_generator import HFGenerator
from harness.sampling import edit_distance, prompt_seed, sample_prompts, select_diverse


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core box: avoid OpenMP spinning; results unchanged
    yield
    torch.set_num_threads(before)


def _dp_distance(a: str, b: str) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            if i == 0 or j == 0:
                table[i][j] = i + j
            else:
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                                  table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[-1][-1]


def test_edit_distance_matches_textbook_dp():
    rng = random.Random(0)
    for _ in range(500):
        a = "".join(rng.choice("abc é") for _ in range(rng.randint(0, 15)))
        b = "".join(rng.choice("abcd é") for _ in range(rng.randint(0, 15)))
        assert edit_distance(a, b) == _dp_distance(a, b), (a, b)
    long_a = "".join(rng.choice("xyz ") for _ in range(200))
    assert edit_distance(long_a, long_a[::-1]) == _dp_distance(long_a, long_a[::-1])


@pytest.mark.parametrize("n", [3, 4])
def test_select_diverse_keeps_the_max_min_subset(n):
    responses = ["Paris.", "Paris!", "It is Paris.", "The capital of France is Paris.", "Lyon, I believe.",
                 "I am not sure."]
    chosen = select_diverse(responses, n)
    assert len(chosen) == n and len(set(chosen)) == n

    def min_dist(subset):
        return min(_dp_distance(responses[i], responses[j]) for i, j in itertools.combinations(subset, 2))

    subsets = list(itertools.combinations(range(len(responses)), n))
    best = max(min_dist(s) for s in subsets)
    optimal = {frozenset(s) for s in subsets if min_dist(s) == best}
    assert len(optimal) == 1  # the example has one max-min subset, so the check is sharp
    assert frozenset(chosen) in optimal
    # start rule: the largest total distance to all others goes first
    totals = [sum(_dp_distance(r, s) for s in responses) for r in responses]
    assert chosen[0] == max(range(len(responses)), key=lambda i: (totals[i], -i))


def test_select_diverse_edges():
    assert select_diverse(["a", "b"], 4) == [0, 1]
    assert select_diverse(["a", "b", "c"], 0) == []
    assert select_diverse(["x", "x", "x"], 2) == [0, 1]  # all ties: lowest indices


def test_prompt_seed_is_stable():
    assert prompt_seed(0, "p1") == prompt_seed(0, "p1") != prompt_seed(1, "p1") != prompt_seed(0, "p2")
    # sha256-based, not Python's salted hash(): the same in every process
    assert prompt_seed(0, "p1") == int(hashlib.sha256(b"0:p1").hexdigest()[:15], 16)


def _prompts(k=3):
    return [{"prompt_id": f"p{i}", "messages": [{"role": "user", "content": f"Tell me about topic {i}."}]}
            for i in range(k)]


def test_sample_prompts_reproducible_and_seed_sensitive():
    tiny = make_tiny("llama")
    cfg = SamplingConfig(candidates=4, n=2, max_new_tokens=8)
    a = sample_prompts(HFGenerator(tiny), tiny.formatter, _prompts(), cfg, progress=False)
    b = sample_prompts(HFGenerator(tiny), tiny.formatter, _prompts(), cfg, progress=False)
    c = sample_prompts(HFGenerator(tiny), tiny.formatter, _prompts(), cfg.model_copy(update={"seed": 7}),
                       progress=False)
    assert a.records == b.records and len(a.records) == 3
    assert [r["responses"] for r in a.records] != [r["responses"] for r in c.records]
    rec = a.records[0]
    assert set(rec) == {"prompt_id", "messages", "responses", "finished", "response_token_counts"}
    assert len(rec["responses"]) == 2 and all(0 < t <= 8 for t in rec["response_token_counts"])
    assert a.generated_tokens == a.stats["generated_tokens"] > 0 and a.dropped == []
    # A prompt's samples do not depend on the other prompts in the run.
    alone = sample_prompts(HFGenerator(tiny), tiny.formatter, _prompts()[2:], cfg, progress=False)
    assert alone.records[0] == a.records[2]


class _FixedGenerator(Generator):
    name = "fixed"

    def __init__(self, texts_per_prompt):
        self.texts = texts_per_prompt
        self.generated_tokens = 0

    def generate(self, requests, params, progress=None):
        outs = []
        for req, texts in zip(requests, self.texts, strict=True):
            assert req.n == len(texts)
            self.generated_tokens += sum(len(t) for t in texts)
            outs.append(GenerationOutput([[1] * len(t) for t in texts], list(texts), [True] * len(texts)))
        return outs

    @property
    def identity(self):
        return {"backend": "fixed"}


def test_prompts_with_duplicate_kept_responses_are_dropped():
    tiny = make_tiny("llama")
    gen = _FixedGenerator([["same", "same", "same"], ["one", "two", "three"]])
    cfg = SamplingConfig(candidates=3, n=2)
    result = sample_prompts(gen, tiny.formatter, _prompts(2), cfg, progress=False)
    assert [r["prompt_id"] for r in result.records] == ["p1"]
    assert result.dropped == ["p0"] and result.stats["prompts_in"] == 2
    assert result.generated_tokens == 12 + 11
    assert result.records[0]["response_token_counts"] == [len(t) + 1 for t in result.records[0]["responses"]]


def _released_agg(texts: list[str], k: int) -> list[int]:
    """EganGu/PAD data_gen/gen/agg.py's selection, retyped (Levenshtein over characters)."""
    n = len(texts)
    dist_matrix = [[edit_distance(texts[i], texts[j]) for j in range(n)] for i in range(n)]
    selected_indices = [0]  # Start with the first text
    remaining_indices = set(range(1, n))
    while len(selected_indices) < k:
        max_min_dist = -1
        next_index = -1
        for i in sorted(remaining_indices):  # CPython iterates a set of small ints in ascending order
            min_dist = min(dist_matrix[i][j] for j in selected_indices)
            if min_dist > max_min_dist:
                max_min_dist = min_dist
                next_index = i
        selected_indices.append(next_index)
        remaining_indices.remove(next_index)
    return selected_indices


def test_first_pick_first_is_the_released_selection_and_farthest_differs():
    rng = random.Random(0)
    differs = 0
    for _ in range(300):
        texts = ["".join(rng.choice("abc ") for _ in range(rng.randint(0, 12))) for _ in range(5)]
        released = _released_agg(texts, 4)
        assert select_diverse(texts, 4, first_pick="first") == released
        differs += set(select_diverse(texts, 4, first_pick="farthest")) != set(released)
    assert differs > 0  # the two start rules are different rules, so both are offered
