"""The Scorer: batched, prompt-shared scores equal one-at-a-time scores; top-k layout; token accounting."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import make_tiny

from harness.methods.common import pack_sequences, sequence_logprobs
from harness.models.scoring import Scorer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Shared 2-core box: one thread avoids OpenMP spinning against other processes; results are identical.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _groups(loaded, n_groups=4, seed=0):
    rng = random.Random(seed)
    fmt = loaded.formatter
    groups = []
    for g in range(n_groups):
        prompt = fmt.prompt_ids([{"role": "user", "content": f"question {g} " + "words " * rng.randint(0, 6)}])
        n = rng.randint(1, 4)
        responses = [fmt.response_ids("answer " * rng.randint(0, 5) + str(i)) for i in range(n)]
        groups.append((prompt, responses))
    return groups


def _one_at_a_time(loaded, prompt, response):
    """Independent reference: the training path (right-padded full sequence, prompt tokens masked)."""
    packed = pack_sequences([prompt], [response], loaded.tokenizer.pad_token_id, 10**6, 10**6)
    with torch.no_grad():
        total, mean, count = sequence_logprobs(loaded.model, packed)
    return total.item(), mean.item(), int(count.item())


def _check_against_single(loaded, groups, batch_size):
    scorer = Scorer(loaded, batch_size=batch_size)
    batched = scorer.score_groups(groups)
    assert [len(r) for r in batched] == [len(rs) for _, rs in groups]
    for (prompt, responses), row in zip(groups, batched, strict=True):
        for response, score in zip(responses, row, strict=True):
            total, mean, count = _one_at_a_time(loaded, prompt, response)
            assert score.n_tokens == count == len(response)
            assert abs(score.sum_logprob - total) < 1e-4
            assert abs(score.mean_logprob - mean) < 1e-4
    return scorer


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_equals_one_at_a_time_tiny(arch, batch_size):
    loaded = make_tiny(arch, seed=2)
    _check_against_single(loaded, _groups(loaded), batch_size)


def test_prompt_encoded_once_per_group():
    loaded = make_tiny("llama")
    groups = _groups(loaded, n_groups=3)
    scorer = Scorer(loaded, batch_size=16)
    scorer.score_groups(groups)
    expected = sum(len(p) + sum(len(r) - 1 for r in rs) for p, rs in groups)
    naive = sum(len(p) + len(r) for p, rs in groups for r in rs)
    assert scorer.forward_tokens == expected < naive


def test_topk_layout_and_values():
    loaded = make_tiny("llama", seed=1)
    groups = _groups(loaded, n_groups=3)
    k = 5
    topk = Scorer(loaded, batch_size=3).topk_groups(groups, k)
    for (prompt, responses), row in zip(groups, topk, strict=True):
        assert len(row) == len(responses)
        for response, (ids, lps) in zip(responses, row, strict=True):
            assert ids.shape == lps.shape == (len(response), k)
            assert ids.dtype == torch.long and lps.dtype == torch.float32
            full = torch.tensor([prompt + response])
            with torch.no_grad():
                logp = torch.log_softmax(loaded.model(input_ids=full).logits[0].float(), -1)
            ref = logp[len(prompt) - 1 : len(prompt) - 1 + len(response)]  # row t predicts response token t
            ref_vals, _ = ref.topk(k, dim=-1)
            assert torch.allclose(lps, ref_vals, atol=1e-4)
            assert torch.allclose(ref.gather(-1, ids), lps, atol=1e-4)  # ids point at those values


def test_next_token_logprobs_matches_single():
    loaded = make_tiny("llama")
    prompts = [p for p, _ in _groups(loaded, n_groups=5)]
    cands = [65, 66]
    batched = Scorer(loaded, batch_size=2).next_token_logprobs(prompts, cands)
    for p, row in zip(prompts, batched, strict=True):
        with torch.no_grad():
            ref = torch.log_softmax(loaded.model(input_ids=torch.tensor([p])).logits[0, -1].float(), -1)[cands]
        assert torch.allclose(row, ref, atol=1e-5)


def test_shared_prefix_next_token_logprobs_match_plain():
    loaded = make_tiny("llama", seed=3)
    fmt = loaded.formatter
    sets = [[fmt.prompt_ids([{"role": "user", "content": f"Judge: {a} vs {b}"}]) for a, b in pairs]
            for pairs in ([("x", "yy"), ("yy", "x"), ("x", "zzz")], [("one", "two"), ("two", "one")], [("s", "s")])]
    cands = [65, 66, 67]
    scorer = Scorer(loaded, batch_size=4)
    shared = scorer.shared_next_token_logprobs(sets, cands)
    plain = Scorer(loaded, batch_size=4).next_token_logprobs([p for s in sets for p in s], cands)
    assert torch.allclose(torch.cat(shared), plain, atol=1e-5)
    assert [t.shape[0] for t in shared] == [3, 2, 1]
    assert scorer.forward_tokens < sum(len(p) for s in sets for p in s)


def test_empty_response_scores_zero():
    loaded = make_tiny("llama")
    prompt = loaded.formatter.prompt_ids([{"role": "user", "content": "q"}])
    scores = Scorer(loaded).score_groups([(prompt, [[], loaded.formatter.response_ids("ok")])])
    assert scores[0][0].n_tokens == 0 and scores[0][0].sum_logprob == 0.0
    assert scores[0][1].n_tokens == 4  # 'o', 'k', then the ChatML turn suffix '<|im_end|>' '\n'


@pytest.mark.smollm
@pytest.mark.slow
def test_batched_equals_one_at_a_time_smollm(smollm):
    fmt = smollm.formatter
    groups = [
        (fmt.prompt_ids([{"role": "user", "content": "What is the capital of France?"}]),
         [fmt.response_ids(r) for r in ["Paris.", "The capital of France is Paris.", "I think it is Lyon."]]),
        (fmt.prompt_ids([{"role": "user", "content": "Name a primary colour."}]),
         [fmt.response_ids(r) for r in ["Red.", "Blue is one."]]),
    ]
    _check_against_single(smollm, groups, batch_size=8)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_shared_context_is_encoded_once_and_scores_equal_one_at_a_time(arch):
    """A teacher's long context (system prompt + demonstrations) shared by every prompt runs once per chunk
    (its KV cache repeated), the suffixes after it left-padded: scores still equal one-at-a-time scoring."""
    loaded = make_tiny(arch, seed=3)
    fmt = loaded.formatter
    context = [{"role": "system", "content": "Answer briefly and well. " * 6},
               {"role": "user", "content": "An example question?"}, {"role": "assistant", "content": "An answer."}]
    groups = [(fmt.prompt_ids(context + [{"role": "user", "content": q}]),
               [fmt.response_ids(r) for r in rs])
              for q, rs in [("short?", ["a", "bb bb"]), ("a much longer question here?", ["c c c", "d"]),
                            ("mid one?", ["eee"])]]
    scorer = _check_against_single(loaded, groups, batch_size=16)  # one chunk: all five responses
    from harness.models.kv import common_prefix_length

    shared = common_prefix_length([p for p, _ in groups])
    assert shared >= 32  # the shared-prefix path ran
    expected = shared + sum(len(p) - shared + sum(len(r) - 1 for r in rs) for p, rs in groups)
    assert scorer.forward_tokens == expected


def test_remembered_prompt_passes_give_the_same_scores_and_run_only_responses():
    """The teacher reads every row's answers to the same prompts: a scorer that remembers its prompt passes
    scores later calls exactly as a fresh one does, running only the response tokens."""
    loaded = make_tiny("llama", seed=3)
    prompts = [p for p, _ in _groups(loaded, n_groups=5)]
    fmt = loaded.formatter
    remembering = Scorer(loaded, batch_size=4, remember_prompts=8)
    for call in range(3):  # each call: new answers (one per prompt) to the same prompts
        groups = [(p, [fmt.response_ids("reply " * (1 + (g + call) % 4) + str(call))]) for g, p in enumerate(prompts)]
        before = remembering.forward_tokens
        got = remembering.score_groups(groups)
        fresh = Scorer(loaded, batch_size=4)
        assert got == fresh.score_groups(groups)  # bit for bit
        ran = remembering.forward_tokens - before
        responses_only = sum(len(rs[0]) - 1 for _, rs in groups)
        assert ran == (fresh.forward_tokens if call == 0 else responses_only) and responses_only < fresh.forward_tokens
    # a bounded memory: the oldest prompt pass goes first
    small = Scorer(loaded, batch_size=1, remember_prompts=2)
    small.score_groups([(p, [fmt.response_ids("x")]) for p in prompts])
    assert len(small._prompt_passes) == 2
