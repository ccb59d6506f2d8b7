"""Shared signals: layouts, the teacher's context, MCQ matrix properties and both orders, top-k storage."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_tiny

from harness import signals
from harness.config import SamplingConfig
from harness.methods.base import PromptGroup, Signal
from harness.methods.common import pack_sequences, sequence_logprobs
from harness.models.scoring import Scorer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core box: avoid OpenMP spinning; results unchanged
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return make_tiny("llama", seed=0), make_tiny("llama", seed=1, system_prompt="You are a careful assistant.")


GROUPS = [
    PromptGroup("p0", [{"role": "user", "content": "What is 2+2?"}], ["4", "Four.", "It is 5", "2+2=4"]),
    {"prompt_id": "p1", "messages": [{"role": "user", "content": "Say hi."}], "responses": ["hi", "hello", "yo"]},
]


def _reference_scores(loaded, group, max_length=10**6, max_prompt=10**6):
    fmt = loaded.formatter
    prompt = fmt.prompt_ids(signals._field(group, "messages"))
    out = []
    for r in signals._field(group, "responses"):
        packed = pack_sequences([prompt], [fmt.response_ids(r)], loaded.tokenizer.pad_token_id, max_length, max_prompt)
        with torch.no_grad():
            total, mean, _ = sequence_logprobs(loaded.model, packed)
        out.append((total.item(), mean.item()))
    return out


def test_logprob_signals_use_each_models_own_context(models):
    student, teacher = models
    t = signals.teacher_avg_logprob(teacher, GROUPS, batch_size=3, progress=None)
    s = signals.student_avg_logprob(student, GROUPS, progress=None)
    ref = signals.reference_logprob(student, GROUPS, progress=None)
    assert [len(row) for row in t.values] == [4, 3]
    for g, group in enumerate(GROUPS):
        for i, ((t_sum, t_mean), (s_sum, s_mean)) in enumerate(
            zip(_reference_scores(teacher, group), _reference_scores(student, group), strict=True)
        ):
            assert abs(t.values[g][i] - t_mean) < 1e-4 and abs(s.values[g][i] - s_mean) < 1e-4
            assert abs(ref.values[g][i] - s_sum) < 1e-4
    # the teacher's system prompt is in its prompt, so it encodes more tokens than the student
    assert t.forward_tokens > s.forward_tokens == ref.forward_tokens > 0


def test_sequence_scores_truncate_like_training(models):
    student, _ = models
    res = signals.sequence_scores(student, GROUPS, max_length=20, max_prompt_length=12, progress=None)
    for g, group in enumerate(GROUPS):
        expected = _reference_scores(student, group, max_length=20, max_prompt=12)
        assert [round(x, 4) for x in res.sum[g]] == [round(s, 4) for s, _ in expected]
        assert all(n <= 8 for n in res.n_tokens[g])


def test_mcq_matrix_properties(models):
    _, teacher = models
    res = signals.mcq_preference(teacher, GROUPS, batch_size=5, progress=None)
    for pref, group in zip(res.values, GROUPS, strict=True):
        p = torch.tensor(pref, dtype=torch.float64)
        n = len(signals._field(group, "responses"))
        assert p.shape == (n, n)
        assert torch.allclose(p + p.T, torch.ones(n, n, dtype=torch.float64), atol=1e-12)
        assert torch.all(p.diagonal() == 0.5) and torch.all((p > 0) & (p < 1))
    win = PromptGroup("p0", GROUPS[0].messages, GROUPS[0].responses, {Signal.MCQ_PREFERENCE: res.values[0]})
    assert len(win.mcq_win_prob()) == 4
    assert res.forward_tokens > 0


def test_mcq_asks_both_orders_and_averages_them(models, monkeypatch):
    _, teacher = models
    seen = []
    real = Scorer.next_token_logprobs

    def spy(self, prompts, candidates):
        seen.extend(self.loaded.tokenizer.decode(p) for p in prompts)
        return real(self, prompts, candidates)

    monkeypatch.setattr(Scorer, "next_token_logprobs", spy)
    group = GROUPS[1]
    res = signals.mcq_preference(teacher, [group], progress=None)
    responses = group["responses"]
    for i in range(3):
        for j in range(3):
            if i != j:
                shown = [t for t in seen
                         if f"### Response A\n{responses[i]}\n\n### Response B\n{responses[j]}\n" in t]
                assert len(shown) == 1, (i, j)
                assert "You are a careful assistant." in shown[0]  # the teacher judges in its own context
    assert len(seen) == 6
    # independent recomputation of pref[0][1] from the two prompts
    options = signals.mcq_option_ids(teacher)
    asks = {(i, j): p for i, j, p in signals.mcq_prompts(teacher, group)}
    with torch.no_grad():
        def p_a(ids):
            logits = teacher.model(input_ids=torch.tensor([ids])).logits[0, -1, options].double()
            return torch.softmax(logits, -1)[0].item()
        expected = 0.5 * (p_a(asks[(0, 1)]) + (1 - p_a(asks[(1, 0)])))
    assert abs(res.values[0][0][1] - expected) < 1e-5


class _AlwaysA(torch.nn.Module):
    """Wraps a model so that the option 'A' gets a huge logit: a maximally position-biased judge."""

    def __init__(self, inner, a_id):
        super().__init__()
        self.inner, self.a_id = inner, a_id

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits[..., self.a_id] += 50.0
        return out


def test_position_bias_cancels(models):
    _, teacher = models
    a_id = signals.mcq_option_ids(teacher)[0]
    biased = dataclasses.replace(teacher, model=_AlwaysA(teacher.model, a_id))
    res = signals.mcq_preference(biased, GROUPS, progress=None)
    for pref in res.values:
        assert torch.allclose(torch.tensor(pref), torch.full((len(pref), len(pref)), 0.5), atol=1e-6)


def test_topk_layout_and_compact_roundtrip(models, tmp_path):
    _, teacher = models
    res = signals.teacher_topk(teacher, GROUPS, k=4, progress=None)
    for value, group in zip(res.values, GROUPS, strict=True):
        responses = signals._field(group, "responses")
        assert len(value["ids"]) == len(value["logprobs"]) == len(responses)
        for r, ids, lps in zip(responses, value["ids"], value["logprobs"], strict=True):
            assert ids.shape == lps.shape == (len(teacher.formatter.response_ids(r)), 4)
            assert torch.all(lps[:, :-1] >= lps[:, 1:])  # sorted best-first
    path = tmp_path / "topk.safetensors"
    signals.save_topk(path, res.values)
    back = signals.load_topk(path)
    from safetensors.torch import load_file

    raw = load_file(str(path))
    assert raw["ids"].dtype == torch.int32 and raw["logprobs"].dtype == torch.float16
    assert len(back) == len(res.values)
    for a, b in zip(res.values, back, strict=True):
        for x, y in zip(a["ids"], b["ids"], strict=True):
            assert torch.equal(x, y) and y.dtype == torch.long
        for x, y in zip(a["logprobs"], b["logprobs"], strict=True):
            assert torch.allclose(x, y, atol=1e-2, rtol=1e-3) and y.dtype == torch.float32
    tail = signals.topk_tail_logprob(back[0]["logprobs"][0])
    assert torch.all(tail <= 0) and tail.shape == (back[0]["logprobs"][0].shape[0],)


def test_teacher_samples_reproducible_with_accounting(models):
    _, teacher = models
    cfg = SamplingConfig(max_new_tokens=6)
    prompts = [{"prompt_id": "p0", "messages": GROUPS[0].messages}, {"prompt_id": "p1", "messages": GROUPS[1]["messages"]}]
    a = signals.teacher_samples(teacher, prompts, cfg, n=2, progress=None)
    b = signals.teacher_samples(teacher, prompts, cfg, n=2, progress=None)
    assert a.values == b.values and [v["prompt_id"] for v in a.values] == ["p0", "p1"]
    assert all(len(v["responses"]) == 2 for v in a.values)
    assert 0 < a.generated_tokens <= 2 * 2 * 6 and a.forward_tokens > 0


def test_unknown_mcq_template_is_a_config_error(models):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="mcq_template"):
        signals.mcq_preference(models[1], GROUPS, template="nope", progress=None)
