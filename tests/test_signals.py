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
from harness.signals import mcq
from harness.signals.common import group_field


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
    prompt = fmt.prompt_ids(group_field(group, "messages"))
    out = []
    for r in group_field(group, "responses"):
        packed = pack_sequences([prompt], [fmt.response_ids(r)], loaded.tokenizer.pad_token_id, max_length, max_prompt)
        with torch.no_grad():
            total, mean, _ = sequence_logprobs(loaded.model, packed)
        out.append((total.item(), mean.item()))
    return out


def test_logprob_signals_use_each_models_own_context(models):
    student, teacher = models
    t = signals.sequence_scores(teacher, GROUPS, batch_size=3, progress=None)
    s = signals.sequence_scores(student, GROUPS, progress=None)
    assert [len(row) for row in t.mean] == [4, 3]
    for g, group in enumerate(GROUPS):
        for i, ((_, t_mean), (s_sum, s_mean)) in enumerate(
            zip(_reference_scores(teacher, group), _reference_scores(student, group), strict=True)
        ):
            assert abs(t.mean[g][i] - t_mean) < 1e-4 and abs(s.mean[g][i] - s_mean) < 1e-4
            assert abs(s.sum[g][i] - s_sum) < 1e-4
    # the teacher's system prompt is in its prompt, so it encodes more tokens than the student
    assert t.forward_tokens > s.forward_tokens > 0


def test_sequence_scores_truncate_like_training(models):
    student, _ = models
    res = signals.sequence_scores(student, GROUPS, max_length=20, max_prompt_length=12, progress=None)
    for g, group in enumerate(GROUPS):
        expected = _reference_scores(student, group, max_length=20, max_prompt=12)
        assert [round(x, 4) for x in res.sum[g]] == [round(s, 4) for s, _ in expected]
        assert all(n <= 8 for n in res.n_tokens[g])


def test_mcq_matrix_properties(models):
    _, teacher = models
    res = signals.mcq_preference(teacher, GROUPS, batch_size=5, progress=None, rule="debiased")
    for pref, group in zip(res.values, GROUPS, strict=True):
        p = torch.tensor(pref, dtype=torch.float64)
        n = len(group_field(group, "responses"))
        assert p.shape == (n, n)
        assert torch.allclose(p + p.T, torch.ones(n, n, dtype=torch.float64), atol=1e-12)
        assert torch.all(p.diagonal() == 0.5) and torch.all((p > 0) & (p < 1))
    win = PromptGroup("p0", GROUPS[0].messages, GROUPS[0].responses, {Signal.MCQ_PREFERENCE: res.values[0]})
    assert len(win.mcq_win_prob()) == 4
    # the judge's context + question is encoded once per group, not once per ordered pair
    asked = sum(len(p) for g in GROUPS for _, _, p in signals.mcq_prompts(teacher, g))
    assert 0 < res.forward_tokens < asked


def spy_mcq_prompts(monkeypatch) -> list[str]:
    """The decoded text of every prompt the MCQ judge is asked (filled in as it is asked)."""
    seen: list[str] = []
    real = Scorer.shared_next_token_logprobs

    def spy(self, prompt_sets, candidates, progress=None, within_top=None):
        seen.extend(self.loaded.tokenizer.decode(p) for prompts in prompt_sets for p in prompts)
        return real(self, prompt_sets, candidates, progress, within_top)

    monkeypatch.setattr(Scorer, "shared_next_token_logprobs", spy)
    return seen


def test_mcq_asks_both_orders_and_averages_them(models, monkeypatch):
    _, teacher = models
    seen = spy_mcq_prompts(monkeypatch)
    group = GROUPS[1]
    res = signals.mcq_preference(teacher, [group], progress=None, rule="debiased")
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
    res = signals.mcq_preference(biased, GROUPS, progress=None, rule="debiased")
    for pref in res.values:
        assert torch.allclose(torch.tensor(pref), torch.full((len(pref), len(pref)), 0.5), atol=1e-6)


def test_topk_layout_and_compact_roundtrip(models, tmp_path):
    _, teacher = models
    res = signals.teacher_topk(teacher, GROUPS, k=4, progress=None)
    for value, group in zip(res.values, GROUPS, strict=True):
        responses = group_field(group, "responses")
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


def test_a_signal_is_computed_once_and_charged_to_every_method_that_reads_it(tmp_path, monkeypatch):
    """Through the real pipeline: pad, sft and dpo all read the teacher's MCQ preferences. The MCQ signal
    runs once; its teacher tokens appear in each reader's accounting; a rerun computes nothing."""
    from harness.config import parse_experiment
    from harness.pipeline import Pipeline

    calls = []
    real = signals.mcq_preference

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(result.forward_tokens)
        return result

    monkeypatch.setattr(mcq, "mcq_preference", counting)  # where the MCQ source looks it up
    exp = parse_experiment({
        "name": "once",
        "teacher": {"model": "tiny:llama", "seed": 1, "system_prompt": "Be brief."},
        "student": {"model": "tiny:llama", "seed": 0},
        "prompts": {"source": "sharegpt", "count": 3, "max_prompt_chars": 80},
        "sampling": {"candidates": 2, "n": 2, "max_new_tokens": 4},
        "methods": [{"name": "pad", "params": {"mcq_filter": False}}, {"name": "sft"}, {"name": "dpo"}],
        "budget": {"max_steps": 1, "effective_batch": 1, "micro_batch": 1, "max_length": 48,
                   "max_prompt_length": 32},
    }, "test")
    pipe = Pipeline(exp, tmp_path, progress=False)
    pipe.run()
    assert len(calls) == 1 and calls[0] > 0
    accounting = {row.method.name: row.train.manifest()["accounting"]
                  for row in pipe.rows() if row.train is not None}
    mcq_tokens = pipe.build_plan().signals[Signal.MCQ_PREFERENCE].artifact.manifest()["accounting"]["teacher_forward_tokens"]
    assert mcq_tokens == calls[0]
    readers = [name for name, method in ((m.name, pipe.methods[m.row_name]) for m in exp.methods)
               if Signal.MCQ_PREFERENCE in method.signals_needed()]
    assert {"pad", "sft"} <= set(readers)
    for name in readers:  # the one computation is charged in full to every method that reads it
        assert accounting[name]["teacher_forward_tokens_precompute"] >= mcq_tokens
    Pipeline(exp, tmp_path, progress=False).run()  # a rerun reads every signal from the cache
    assert len(calls) == 1


# --- the released MCQ rule ------------------------------------------------------------------------


def test_released_mcq_asks_each_pair_once_and_reads_raw_top20_letter_mass(models, monkeypatch):
    _, teacher = models
    seen = spy_mcq_prompts(monkeypatch)
    group = GROUPS[0]
    res = signals.mcq_preference(teacher, [group], progress=None)  # the default rule is the released one
    responses = group.responses
    assert len(seen) == 6  # C(4, 2): each unordered pair once ...
    for i in range(4):
        for j in range(i + 1, 4):  # ... the lower index shown as A, in the released prompt
            shown = [t for t in seen if f'A) """\n{responses[i]}\n"""\nB) """\n{responses[j]}\n"""' in t]
            assert len(shown) == 1 and 'Output "None"' in shown[0] and "You are a careful assistant." in shown[0]

    # Independent recomputation (the release's stat_prob): full softmax, the top 20 tokens, those whose
    # text contains the letter and is shorter than 3 characters, summed, plus 1e-8; no renormalisation.
    tok = teacher.tokenizer
    asks = {(i, j): p for i, j, p in signals.mcq_prompts(teacher, group, "released", both_orders=False)}
    pref = res.values[0]
    with torch.no_grad():
        for (i, j), ids in asks.items():
            probs = torch.softmax(teacher.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
            top = probs.topk(20)
            mass = {"A": 1e-8, "B": 1e-8}
            for p, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                text = tok.decode([t])
                for letter in mass:
                    if letter in text and len(text) < 3:
                        mass[letter] += p
            assert abs(pref[i][j] - mass["A"]) < 1e-6 and abs(pref[j][i] - mass["B"]) < 1e-6


def test_released_rule_lets_the_filter_act_and_the_debiased_rule_cannot(models):
    from harness.methods.pad import keep_group

    _, teacher = models
    a_id = signals.mcq_option_ids(teacher)[0]
    none_id = teacher.tokenizer("N", add_special_tokens=False)["input_ids"][0]
    judges = {"prefers A": dataclasses.replace(teacher, model=_AlwaysA(teacher.model, a_id)),
              "answers None": dataclasses.replace(teacher, model=_AlwaysA(teacher.model, none_id))}
    for name, judge in judges.items():
        released = signals.mcq_preference(judge, [GROUPS[0]], progress=None)
        debiased = signals.mcq_preference(judge, [GROUPS[0]], progress=None, rule="debiased")
        rel = PromptGroup("p", [], GROUPS[0].responses, {Signal.MCQ_PREFERENCE: released.values[0]})
        deb = PromptGroup("p", [], GROUPS[0].responses, {Signal.MCQ_PREFERENCE: debiased.values[0]})
        # debiased: sum_i m_i = n/2 whatever the judge does, so a prompt is dropped only if all m_i = 0.5
        assert sum(deb.mcq_win_prob()) == pytest.approx(2.0, abs=1e-9)
        if name == "answers None":  # no letter gets any mass: every m_i ~ 0 < 0.5, the prompt is dropped
            assert max(rel.mcq_win_prob()) < 1e-3 and not keep_group(rel)
        else:  # position bias is not cancelled: response 0 (always shown as A) wins everything
            wins = rel.mcq_win_prob()
            assert wins[0] > 0.99 and wins[3] < 1e-3 and keep_group(rel)


def test_unknown_mcq_rule_is_a_config_error(models):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="signals.mcq"):
        signals.mcq_preference(models[1], GROUPS, rule="both", progress=None)
