"""One prompt encoding for all its responses in training: same log-probs and gradients as one row per
(prompt, response), fewer tokens, and the methods that use it train the same weights."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny

from harness.methods.base import TrainContext
from harness.methods.common import pack_sequences, sequence_logprobs
from harness.methods.shared_prompt import GroupPacked, pack_groups, shares_prompts

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_groups(vocab: int, seed: int = 0) -> tuple[list[list[int]], list[list[list[int]]]]:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(2, 12))] for _ in range(3)]
    responses = [[[rng.randrange(3, vocab) for _ in range(rng.randint(1, 9))] for _ in range(4)] for _ in range(3)]
    return prompts, responses


def flat_pairs(prompts, responses):
    return [p for p, rs in zip(prompts, responses, strict=True) for _ in rs], [r for rs in responses for r in rs]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(("max_length", "max_prompt"), [(64, 32), (13, 6)])  # (13, 6): prompts and responses cut
def test_grouped_logprobs_and_gradients_equal_one_row_per_pair(arch, attention, max_length, max_prompt):
    model = make_tiny(arch, seed=0).model
    model.set_attn_implementation(attention)
    assert shares_prompts(model)
    prompts, responses = random_groups(model.config.vocab_size)
    flat_p, flat_r = flat_pairs(prompts, responses)

    rows = pack_sequences(flat_p, flat_r, 0, max_length, max_prompt)
    expected = sequence_logprobs(model, rows)
    expected[1].sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    grouped = pack_groups(prompts, responses, 0, max_length, max_prompt)
    got = grouped.sequence_logprobs(model)
    got[1].sum().backward()
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=2e-5, rtol=0)
    for p, e in zip(model.parameters(), expected_grads, strict=True):
        torch.testing.assert_close(p.grad, e, atol=2e-5, rtol=0)

    # Tokens run: each prompt once, its last token once more per further response (every scored position
    # distinct), each response but its last token (independently of the code).
    cut = [min(len(p), max_prompt) for p in prompts]
    fed = sum(c + len(rs) - 1 + sum(min(len(r), max(1, max_length - c)) - 1 for r in rs)
              for c, rs in zip(cut, responses, strict=True))
    assert grouped.num_tokens == fed < rows.num_tokens


def test_order_puts_results_where_the_caller_wants_them():
    model = make_tiny("llama", seed=0).model
    prompts, responses = random_groups(model.config.vocab_size, seed=1)
    pairs = [rs[:2] for rs in responses]
    b = len(prompts)
    grouped = pack_groups(prompts, pairs, 0, 64, 32, order=[[i, b + i] for i in range(b)])
    chosen_first = pack_sequences(prompts + prompts, [r[0] for r in pairs] + [r[1] for r in pairs], 0, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(grouped.sequence_logprobs(model)[0], sequence_logprobs(model, chosen_first)[0],
                                   atol=2e-5, rtol=0)


def test_models_that_cannot_take_the_custom_mask_do_not_share():
    def model(**config):
        return SimpleNamespace(config=SimpleNamespace(**config))

    assert shares_prompts(model(_attn_implementation="sdpa"))
    assert not shares_prompts(model(_attn_implementation="flash_attention_2"))
    assert not shares_prompts(model(_attn_implementation="sdpa", sliding_window=4096))  # Gemma-2, Mistral
    assert shares_prompts(model(_attn_implementation="sdpa", sliding_window=4096, use_sliding_window=False))
    assert shares_prompts(SimpleNamespace(module=model(_attn_implementation="eager")))  # DDP-wrapped


@pytest.mark.parametrize("method_name", ["pad", "dpo", "simpo"])
def test_methods_give_the_same_loss_and_gradients_with_and_without_sharing(method_name):
    from harness.methods.base import PromptGroup, Signal
    from harness.registry import METHODS

    student = make_tiny("llama", seed=0)
    rng = random.Random(0)
    words = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree"]
    groups = [PromptGroup(f"p{i}", [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(2, 6)))}],
                          [" ".join(rng.choices(words, k=rng.randint(1, 7))) for _ in range(4)],
                          signals={Signal.TEACHER_AVG_LOGPROB: [rng.uniform(-3, -1) for _ in range(4)]})
              for i in range(3)]
    params = {"pad": {"alpha": 1.0, "mcq_filter": False}, "dpo": {"preference": "teacher_logprob"},
              "simpo": {"preference": "teacher_logprob"}}[method_name]
    method = METHODS.get(method_name)(params)
    if method_name == "dpo":  # the reference term: any fixed numbers exercise it
        for g in groups:
            g.signals[Signal.REFERENCE_LOGPROB] = [rng.uniform(-30, -5) for _ in range(4)]
    examples = method.build_examples(groups, random.Random(0))
    results = []
    for share in (False, True):
        ctx = TrainContext(formatter=student.formatter, max_length=48, max_prompt_length=24, share_prompts=share)
        batch = method.collate(examples, ctx)
        assert isinstance(batch["packed"], GroupPacked) == share
        student.model.zero_grad()
        out = method.loss(student.model, batch, ctx)
        out.loss.backward()
        results.append((float(out.loss), [p.grad.clone() for p in student.model.parameters()],
                        batch["student_tokens"]))
    (loss_rows, grads_rows, tokens_rows), (loss_shared, grads_shared, tokens_shared) = results
    assert loss_shared == pytest.approx(loss_rows, abs=1e-5)
    for a, b in zip(grads_rows, grads_shared, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert tokens_shared < tokens_rows
