"""Baselines: golden losses against hand/independent computations, pair selection, vocabulary checks.

Independent references here never call the code under test: per-sequence scoring runs the model on one
unpadded sequence at a time, and the top-k tail uses the `1 - sum(probs)` definition directly.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import make_tiny
from helpers.signals import add_model_signals, preference_matrix, seq_logprobs, sharpened_pair, token_logprobs
from pydantic import ValidationError

from baselines.dpkd import DPKDMethod, dpkd_loss
from baselines.dpo import DPOMethod, dpo_loss
from baselines.gkd import GKDMethod, finish_response, generalized_jsd
from baselines.kd import KDMethod, bucket_logprobs, token_divergence, topk_kd_loss
from baselines.pairs import PairParams, select_group_pair, select_pair
from baselines.plad import PLaDMethod, plad_loss
from baselines.seqkd import SeqKDMethod
from baselines.sft import SFTMethod, nll_from_token_logprobs
from baselines.simpo import SimPOMethod, simpo_loss
from harness.errors import ConfigError, HarnessError
from harness.methods.base import Method, PromptGroup, Signal, TrainContext
from harness.methods.vocab import VocabularyMismatchError
from harness.registry import METHODS

BASELINES = {"sft": SFTMethod, "seqkd": SeqKDMethod, "kd": KDMethod, "dpo": DPOMethod, "simpo": SimPOMethod,
             "gkd": GKDMethod, "dpkd": DPKDMethod, "plad": PLaDMethod}
TOPK = 4


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


# ------------------------------------------------------------------ pure losses, by hand
def test_nll_by_hand() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.1], [0.2, 0.9, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = -(math.log(0.5) + math.log(0.25) + math.log(0.2)) / 3
    assert nll_from_token_logprobs(logp, mask).item() == pytest.approx(expected, rel=1e-6)


# student probabilities over a 5-token vocabulary; the teacher keeps ids 0 and 2 (mass 0.8, tail 0.2)
STUDENT_P = [0.1, 0.2, 0.3, 0.15, 0.25]
TEACHER_IDS = [0, 2]
TEACHER_P = [0.5, 0.3]


def _hand_buckets() -> tuple[list[float], list[float]]:
    p = TEACHER_P + [0.2]  # teacher tail = 1 - 0.8
    q = [0.1, 0.3, 0.6]  # student on ids 0, 2 and the rest (0.2 + 0.15 + 0.25)
    return p, q


def _bucket_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.log(torch.tensor([STUDENT_P])), torch.tensor([TEACHER_IDS]), torch.log(torch.tensor([TEACHER_P])))


def test_kd_tail_bucket_by_hand() -> None:
    student, teacher = bucket_logprobs(*_bucket_inputs())
    p, q = _hand_buckets()
    assert teacher.exp()[0].tolist() == pytest.approx(p, abs=1e-6)
    assert student.exp()[0].tolist() == pytest.approx(q, abs=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "skew_kl", "skew_reverse_kl"])
def test_kd_divergences_by_hand(kind: str) -> None:
    p, q = _hand_buckets()
    a = 0.1
    expected = {
        "forward_kl": _kl(p, q),
        "reverse_kl": _kl(q, p),
        "skew_kl": _kl(p, [a * pi + (1 - a) * qi for pi, qi in zip(p, q, strict=True)]),
        "skew_reverse_kl": _kl(q, [(1 - a) * pi + a * qi for pi, qi in zip(p, q, strict=True)]),
    }[kind]
    got = topk_kd_loss(*_bucket_inputs(), kind=kind, alpha=a)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_against_independent_tail_formula_random() -> None:
    gen = torch.Generator().manual_seed(0)
    n, vocab, k = 6, 11, 3
    student_logp = torch.log_softmax(torch.randn(n, vocab, generator=gen) * 2, -1)
    teacher_full = torch.log_softmax(torch.randn(n, vocab, generator=gen) * 2, -1)
    t_lp, t_ids = teacher_full.topk(k, -1)
    expected = []
    for row in range(n):
        ids = t_ids[row].tolist()
        p = [math.exp(x) for x in t_lp[row].tolist()]
        p.append(1 - sum(p))
        sp = student_logp[row].exp().tolist()
        q = [sp[i] for i in ids]
        q.append(1 - sum(q))
        expected.append(_kl(p, q))
    got = topk_kd_loss(student_logp, t_ids, t_lp)
    assert got.item() == pytest.approx(sum(expected) / n, rel=1e-5)


def test_kd_full_topk_mass_is_finite_and_skew_zero_is_forward() -> None:
    student_logp = torch.log_softmax(torch.randn(2, 4), -1).requires_grad_()
    teacher_full = torch.log_softmax(torch.randn(2, 4), -1)
    t_lp, t_ids = teacher_full.topk(4, -1)  # top-k holds ALL the teacher's mass: tail = 0
    for kind in ("forward_kl", "reverse_kl", "skew_kl", "skew_reverse_kl"):
        loss = topk_kd_loss(student_logp, t_ids, t_lp, kind=kind)  # type: ignore[arg-type]
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(student_logp.grad).all()
    s, t = bucket_logprobs(*_bucket_inputs())
    assert token_divergence(s, t, "skew_kl", 0.0).item() == pytest.approx(token_divergence(s, t).item(), rel=1e-6)


def test_generalized_jsd_by_hand_and_limits() -> None:
    p, q = _hand_buckets()
    s, t = torch.log(torch.tensor([q])), torch.log(torch.tensor([p]))
    for beta in (0.1, 0.5, 0.9):
        m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True)]
        expected = beta * _kl(p, m) + (1 - beta) * _kl(q, m)
        assert generalized_jsd(s, t, beta).item() == pytest.approx(expected, rel=1e-5)
    assert generalized_jsd(s, t, 0.0).item() == pytest.approx(_kl(p, q), rel=1e-5)
    assert generalized_jsd(s, t, 1.0).item() == pytest.approx(_kl(q, p), rel=1e-5)
    assert generalized_jsd(s, t, 0.5).item() == pytest.approx(generalized_jsd(t, s, 0.5).item(), rel=1e-6)
    assert generalized_jsd(s, t, 0.5).item() <= math.log(2)
    assert generalized_jsd(t, t, 0.5).item() == pytest.approx(0.0, abs=1e-7)


def test_dpo_losses_by_hand_including_reference_term() -> None:
    pc, pr = torch.tensor([-10.0]), torch.tensor([-12.0])
    rc, rr = torch.tensor([-11.0]), torch.tensor([-11.0])
    # h = (-10 - -11) - (-12 - -11) = 2
    assert dpo_loss(pc, pr, rc, rr, 0.1).item() == pytest.approx(math.log1p(math.exp(-0.2)), rel=1e-6)
    # IPO as TRL defines it: each log-ratio over its own completion length (4 and 2 tokens here):
    # h_avg = (-10 + 11) / 4 - (-12 + 11) / 2 = 0.75
    assert dpo_loss(pc, pr, rc, rr, 0.1, "ipo", torch.tensor([4.0]), torch.tensor([2.0])).item() == pytest.approx(
        (0.75 - 5) ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="token counts"):
        dpo_loss(pc, pr, rc, rr, 0.1, "ipo")
    assert dpo_loss(pc, pr, rc, rr, 0.1, "hinge").item() == pytest.approx(0.8, rel=1e-6)
    # The reference moves the loss: a reference that already prefers the chosen by 3 nats gives h = -1.
    assert dpo_loss(pc, pr, torch.tensor([-8.0]), torch.tensor([-11.0]), 0.1).item() == pytest.approx(
        math.log1p(math.exp(0.1)), rel=1e-6)


def test_simpo_dpkd_plad_by_hand() -> None:
    c, r = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert simpo_loss(c, r, beta=2.0, gamma=1.0).item() == pytest.approx(math.log(2), rel=1e-6)
    assert simpo_loss(c, r, beta=2.0, gamma=0.0).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    # dpkd margin = (-1 - -0.8) - (-1.5 - -2.0) = -0.7
    got = dpkd_loss(c, r, torch.tensor([-0.8]), torch.tensor([-2.0]), beta=1.0)
    assert got.item() == pytest.approx(math.log1p(math.exp(0.7)), rel=1e-6)
    assert plad_loss(c, r, margin=1.0).item() == pytest.approx(0.5, rel=1e-6)
    assert plad_loss(c, r, margin=0.2).item() == 0.0
    assert plad_loss(c, r, margin=1.0, kind="logistic").item() == pytest.approx(math.log1p(math.exp(0.5)), rel=1e-6)


# ------------------------------------------------------------------ pair selection
def _pref_group(pid: str, win: list[float], teacher_avg: list[float] | None = None) -> PromptGroup:
    n = len(win)
    signals: dict = {Signal.MCQ_PREFERENCE: preference_matrix(win)}
    if teacher_avg is not None:
        signals[Signal.TEACHER_AVG_LOGPROB] = teacher_avg
    return PromptGroup(pid, [{"role": "user", "content": "q"}], [f"r{i}" for i in range(n)], signals)


def test_best_worst_pair_uses_the_named_signal() -> None:
    group = _pref_group("a", [1.0, 5.0, 0.5, 2.0], teacher_avg=[-0.1, -3.0, -0.5, -2.0])
    assert select_group_pair(group, PairParams()) == (1, 2)
    assert select_group_pair(group, PairParams(preference="teacher_logprob")) == (0, 1)


def test_ties_break_by_index_and_need_two() -> None:
    assert select_pair([0.5, 0.5, 0.5], "best_worst", random.Random(0)) == (0, 2)
    with pytest.raises(ValueError):
        select_pair([1.0], "best_worst", random.Random(0))


def test_random_pairs_are_teacher_ordered_seeded_and_cover_pairs() -> None:
    scores = [0.3, 0.9, 0.1, 0.6]
    group_seen = set()
    for i in range(60):
        group = _pref_group(f"p{i}", [math.exp(s) for s in scores])
        c, r = select_group_pair(group, PairParams(pairs="random"))
        assert scores[c] > scores[r]
        assert select_group_pair(group, PairParams(pairs="random")) == (c, r)  # same seed, same pair
        group_seen.add((c, r))
    assert len(group_seen) == 6  # all C(4, 2) pairs occur
    other = [select_group_pair(_pref_group(f"p{i}", [1, 2, 3, 4]), PairParams(pairs="random", pair_seed=1))
             for i in range(20)]
    same = [select_group_pair(_pref_group(f"p{i}", [1, 2, 3, 4]), PairParams(pairs="random", pair_seed=0))
            for i in range(20)]
    assert other != same


# ------------------------------------------------------------------ methods on a tiny model
@pytest.fixture(scope="module")
def models():
    return sharpened_pair()


MESSAGES = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Say hi twice."}]]
RESPONSES = [["Blue.", "Red is nice", "green!"], ["hi hi", "Hello, hello.", "hey"]]
WINS = [[1.0, 4.0, 2.0], [3.0, 1.0, 2.0]]  # teacher-best: 1 and 0, teacher-worst: 0 and 1


@pytest.fixture(scope="module")
def groups(models):
    student, teacher = models
    out = []
    for g, (messages, responses) in enumerate(zip(MESSAGES, RESPONSES, strict=True)):
        group = _pref_group(f"g{g}", WINS[g])
        group.messages, group.responses = messages, responses
        add_model_signals(group, student, teacher, TOPK)
        group.signals[Signal.TEACHER_SAMPLES] = {"responses": [f"teacher answer {g}", "unused"]}
        out.append(group)
    return out


def _ctx(student, **kw) -> TrainContext:
    return TrainContext(formatter=student.formatter, max_length=256, max_prompt_length=128, **kw)


def _run(method: Method, groups, ctx):
    examples = method.build_examples(groups, random.Random(0))
    assert len(examples) == len(groups)
    batch = method.collate(examples, ctx)
    assert isinstance(batch["student_tokens"], int) and batch["student_tokens"] > 0
    return method.loss(ctx_model(ctx), batch, ctx), batch


def ctx_model(ctx):
    return ctx._model  # set by the tests below: the student module


def _method_ctx(models, **kw):
    ctx = _ctx(models[0], **kw)
    ctx._model = models[0].model  # type: ignore[attr-defined]
    return ctx


def _nll(student, pairs: list[tuple[list, str]]) -> float:
    tokens = []
    for messages, resp in pairs:
        tokens += token_logprobs(student.model, student.formatter.prompt_ids(messages), student.formatter.response_ids(resp))
    return -sum(tokens) / len(tokens)


def test_sft_and_seqkd_golden(models, groups) -> None:
    student = models[0]
    out, _ = _run(SFTMethod(), groups, _method_ctx(models))
    expected = _nll(student, [(MESSAGES[0], RESPONSES[0][1]), (MESSAGES[1], RESPONSES[1][0])])
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    out, _ = _run(SeqKDMethod(), groups, _method_ctx(models))
    expected = _nll(student, [(MESSAGES[0], "teacher answer 0"), (MESSAGES[1], "teacher answer 1")])
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def _pair_stats(student, groups, chosen=(1, 0), rejected=(0, 1)):
    stats = []
    for g, c, r in zip(groups, chosen, rejected, strict=True):
        prompt = student.formatter.prompt_ids(g.messages)
        lc = token_logprobs(student.model, prompt, student.formatter.response_ids(g.responses[c]))
        lr = token_logprobs(student.model, prompt, student.formatter.response_ids(g.responses[r]))
        stats.append((sum(lc), sum(lr), sum(lc) / len(lc), sum(lr) / len(lr)))
    return stats


def test_dpo_golden_reference_term(models, groups) -> None:
    # At initialisation the policy IS the reference, so h = 0 and the sigmoid loss is exactly log 2 ...
    out, _ = _run(DPOMethod({"beta": 0.5}), groups, _method_ctx(models))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-5)
    # ... and with a shifted reference the loss follows the DPO formula computed here.
    shifted = []
    for g in groups:
        g2 = PromptGroup(g.prompt_id, g.messages, g.responses, dict(g.signals))
        g2.signals[Signal.REFERENCE_LOGPROB] = [x + 1.5 * i for i, x in enumerate(g.signals[Signal.REFERENCE_LOGPROB])]
        shifted.append(g2)
    out, _ = _run(DPOMethod({"beta": 0.5}), shifted, _method_ctx(models))
    expected = []
    for g, (sc, sr, _, _), (c, r) in zip(shifted, _pair_stats(models[0], shifted), [(1, 0), (0, 1)], strict=True):
        ref = g.signals[Signal.REFERENCE_LOGPROB]
        h = (sc - ref[c]) - (sr - ref[r])
        expected.append(math.log1p(math.exp(-0.5 * h)))
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_simpo_dpkd_plad_golden(models, groups) -> None:
    stats = _pair_stats(models[0], groups)
    out, _ = _run(SimPOMethod({"beta": 2.0, "gamma": 0.3}), groups, _method_ctx(models))
    expected = [math.log1p(math.exp(-(2.0 * (mc - mr) - 0.3))) for _, _, mc, mr in stats]
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)

    out, _ = _run(DPKDMethod({"beta": 1.5}), groups, _method_ctx(models))
    expected = []
    for g, (_, _, mc, mr), (c, r) in zip(groups, stats, [(1, 0), (0, 1)], strict=True):
        t = g.signals[Signal.TEACHER_AVG_LOGPROB]
        expected.append(math.log1p(math.exp(-1.5 * ((mc - t[c]) - (mr - t[r])))))
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)

    out, _ = _run(PLaDMethod({"margin": 2.0}), groups, _method_ctx(models))
    expected = [max(0.0, 2.0 - (mc - mr)) for _, _, mc, mr in stats]
    assert out.loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def _kd_expected(models, groups, divergence) -> float:
    student = models[0]
    values = []
    for g in groups:
        prompt = student.formatter.prompt_ids(g.messages)
        topk = g.signals[Signal.TEACHER_TOPK]
        for i, resp in enumerate(g.responses):
            s_lp = seq_logprobs(student.model, prompt, student.formatter.response_ids(resp))
            for t in range(s_lp.shape[0]):
                ids = topk["ids"][i][t].tolist()
                p = [math.exp(x) for x in topk["logprobs"][i][t].tolist()]
                p.append(1 - sum(p))
                q = [math.exp(s_lp[t, j].item()) for j in ids]
                q.append(1 - sum(q))
                values.append(divergence(p, q))
    return sum(values) / len(values)


def test_kd_golden_on_tiny_model(models, groups) -> None:
    out, batch = _run(KDMethod(), groups, _method_ctx(models))
    assert out.loss.item() == pytest.approx(_kd_expected(models, groups, _kl), rel=1e-4)
    assert batch["kd_mask"].sum().item() == sum(
        len(models[0].formatter.response_ids(r)) for g in groups for r in g.responses)
    out, _ = _run(KDMethod({"divergence": "reverse_kl"}), groups, _method_ctx(models))
    assert out.loss.item() == pytest.approx(_kd_expected(models, groups, lambda p, q: _kl(q, p)), rel=1e-4)
    out_nll, _ = _run(KDMethod({"nll_weight": 0.5}), groups, _method_ctx(models))
    all_pairs = [(g.messages, r) for g in groups for r in g.responses]
    expected = _kd_expected(models, groups, _kl) + 0.5 * _nll(models[0], all_pairs)
    assert out_nll.loss.item() == pytest.approx(expected, rel=1e-4)


def test_kd_truncated_responses_align(models, groups) -> None:
    ctx = _method_ctx(models)
    ctx.max_length = max(len(models[0].formatter.prompt_ids(m)) for m in MESSAGES) + 3
    out, batch = _run(KDMethod(), groups, ctx)
    assert torch.isfinite(out.loss)
    assert torch.equal(batch["kd_mask"], batch["packed"].response_mask[:, 1:].float())


def test_gkd_offline_branch_matches_bucketed_jsd(models, groups) -> None:
    out, batch = _run(GKDMethod({"lmbda": 0.0, "beta": 0.5}), groups, _method_ctx(models))
    assert batch["on_policy"] is False

    def jsd(p, q):
        m = [0.5 * a + 0.5 * b for a, b in zip(p, q, strict=True)]
        return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)

    assert out.loss.item() == pytest.approx(_kd_expected(models, groups, jsd), rel=1e-4)


class _Acc:
    pass


def test_gkd_on_policy_full_vocab_and_accounting(models, groups) -> None:
    student, teacher = models
    fixed = [[72, 105], [104, 101, 121, 33, 33]]  # what the "student" samples: bytes, no end-of-turn
    calls = []

    def generator(model, prompts, max_new, seed, temperature, top_p):
        calls.append((len(prompts), max_new, seed, temperature, top_p))
        return fixed

    acc = _Acc()
    ctx = _method_ctx(models, generator=generator, teacher_loader=lambda: teacher, accounting=acc)
    method = GKDMethod({"lmbda": 1.0, "beta": 0.3, "max_new_tokens": 8})
    assert method.signals_needed() == frozenset()
    out, batch = _run(method, groups, ctx)
    suffix = list(student.formatter.turn_suffix_ids)  # stopped early: the template's whole turn suffix
    values, teacher_tokens = [], 0
    for g, ids in zip(groups, fixed, strict=True):
        r = ids + suffix
        s_lp = seq_logprobs(student.model, student.formatter.prompt_ids(g.messages), r)
        t_prompt = teacher.formatter.prompt_ids(g.messages)
        t_lp = seq_logprobs(teacher.model, t_prompt, r)
        teacher_tokens += len(t_prompt) + len(r)
        for t in range(len(r)):
            p, q = t_lp[t].exp().tolist(), s_lp[t].exp().tolist()
            m = [0.3 * a + 0.7 * b for a, b in zip(p, q, strict=True)]
            values.append(0.3 * _kl(p, m) + 0.7 * _kl(q, m))
    assert out.loss.item() == pytest.approx(sum(values) / len(values), rel=1e-4)
    assert acc.teacher_forward_tokens_online == teacher_tokens
    assert acc.student_generation_tokens_online == 7
    assert batch["student_tokens"] == sum(
        len(student.formatter.prompt_ids(g.messages)) + len(ids) + len(suffix) for g, ids in zip(groups, fixed, strict=True))
    assert calls and calls[0][1] == 8


def test_gkd_coin_is_deterministic_and_follows_lambda(models, groups) -> None:
    method = GKDMethod({"lmbda": 0.5})
    ctx = _ctx(models[0])
    flips = []
    for step in range(200):
        ctx.step = step
        flips.append(method.collate(method.build_examples(groups, random.Random(0)), ctx)["on_policy"])
    again = []
    for step in range(200):
        ctx.step = step
        again.append(method.collate(method.build_examples(groups, random.Random(0)), ctx)["on_policy"])
    assert flips == again
    assert 60 < sum(flips) < 140


def test_finish_response() -> None:
    assert finish_response([5, 6], 9, 4) == [5, 6, 9]
    assert finish_response([5, 6, 7, 8], 9, 4) == [5, 6, 7, 8]  # hit the limit: did not end
    assert finish_response([5, 9, 7], 9, 4) == [5, 9]
    assert finish_response([], 9, 4) == [9]


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_method_trains_a_step(name: str, models, groups) -> None:
    method = METHODS.get(name)()
    assert type(method) is BASELINES[name]
    teacher = models[1]
    ctx = _method_ctx(models, teacher_loader=lambda: teacher, accounting=_Acc())
    for g in groups:
        assert method.signals_needed() <= set(g.signals)
    model = models[0].model
    model.zero_grad()
    out, _ = _run(method, groups, ctx)
    assert torch.isfinite(out.loss) and out.loss.dim() == 0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.metrics.values())
    model.zero_grad()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_params_reject_unknown_keys_and_are_frozen(name: str) -> None:
    cls = BASELINES[name]
    with pytest.raises(ValidationError):
        cls({"no_such_option": 1})
    params = cls().params
    for field in type(params).model_fields:
        with pytest.raises(ValidationError):
            setattr(params, field, None)  # frozen: parameters cannot drift
    # What the experiment file and results.json record rebuilds the same method.
    assert cls(params.model_dump(mode="json")).params == params
    # `pad-harness methods` lists it with a one-line description (its class docstring's first line).
    description = METHODS.describe(name)
    assert description and not description.startswith("(failed to load"), description


def test_signals_declared_per_params() -> None:
    assert SFTMethod().signals_needed() == {Signal.MCQ_PREFERENCE}
    assert SFTMethod({"preference": "teacher_logprob"}).signals_needed() == {Signal.TEACHER_AVG_LOGPROB}
    assert DPOMethod().signals_needed() == {Signal.MCQ_PREFERENCE, Signal.REFERENCE_LOGPROB}
    assert SimPOMethod().signals_needed() == {Signal.MCQ_PREFERENCE}
    assert DPKDMethod().signals_needed() == {Signal.MCQ_PREFERENCE, Signal.TEACHER_AVG_LOGPROB}
    assert DPKDMethod({"reference": "none"}).signals_needed() == {Signal.MCQ_PREFERENCE}
    assert PLaDMethod().signals_needed() == {Signal.MCQ_PREFERENCE}
    assert KDMethod().signals_needed() == {Signal.TEACHER_TOPK}
    assert SeqKDMethod().signals_needed() == {Signal.TEACHER_SAMPLES}
    assert GKDMethod().signals_needed() == {Signal.TEACHER_TOPK}


# ------------------------------------------------------------------ shared vocabulary
def test_kd_refuses_different_vocabularies(models) -> None:
    llama = models[1]
    gpt2 = make_tiny("gpt2", seed=0)
    for method in (KDMethod(), GKDMethod()):
        with pytest.raises(VocabularyMismatchError) as err:
            method.check_models(llama, gpt2)
        msg = str(err.value)
        assert isinstance(err.value, ConfigError) and isinstance(err.value, HarnessError)
        assert "vocabulary" in msg and str(llama.vocab_size) in msg and str(gpt2.vocab_size) in msg
        assert method.name in msg
    KDMethod().check_models(llama, models[0])  # same vocabulary: fine
    SFTMethod().check_models(llama, gpt2)  # sequence-level methods do not care


def test_experiment_with_kd_across_vocabularies_fails_before_any_work(tmp_path) -> None:
    from pathlib import Path

    import yaml

    from harness.config import parse_experiment
    from harness.pipeline import run_experiment

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "leaderboards" / "tiny.yaml").read_text())
    data["student"] = {"model": "tiny:gpt2", "seed": 0}
    data["methods"] = [{"name": "sft"}, {"name": "kd"}]
    with pytest.raises(VocabularyMismatchError, match="share one vocabulary") as err:
        run_experiment(parse_experiment(data, "kd-mismatch"), tmp_path / "run", progress=False)
    assert "'kd'" in str(err.value) and "tiny:gpt2" in str(err.value)
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != "experiment.yaml"]
    assert not [p for p in written if p.suffix in (".safetensors", ".jsonl")], written


@pytest.mark.parametrize("generator", ["hf_live_sampler", "none"])
def test_gkd_samples_through_the_backends_live_sampler_or_plain_generate(generator, models, groups) -> None:
    from harness.models.hf_generator import HFGenerator

    teacher = models[1]
    acc = _Acc()
    ctx = _method_ctx(models, teacher_loader=lambda: teacher, accounting=acc,
                      generator=HFGenerator.live_sampler(models[0]) if generator == "hf_live_sampler" else None)
    out, batch = _run(GKDMethod({"lmbda": 1.0, "max_new_tokens": 5}), groups, ctx)
    assert batch["on_policy"] is True and torch.isfinite(out.loss)
    assert 0 < acc.student_generation_tokens_online <= 2 * 5
    assert acc.teacher_forward_tokens_online > acc.student_generation_tokens_online
    assert models[0].model.training is False  # the fixture's eval mode is restored after sampling


def test_ipo_matches_trls_formula_retyped() -> None:
    """TRL (v0.19 `concatenated_forward` + `dpo_loss`): for loss_type "ipo" every sequence's log-prob is
    divided by its completion-token count (policy and reference alike), then
    losses = (logits - 1 / (2 * beta)) ** 2 with logits = (pi_c - pi_r) - (ref_c - ref_r)."""
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-50 * torch.rand(6, generator=gen) - 1 for _ in range(4))
    len_c = torch.randint(1, 300, (6,), generator=gen).float()
    len_r = torch.randint(1, 300, (6,), generator=gen).float()
    beta = 0.1

    def trl_ipo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                chosen_len, rejected_len):
        policy_chosen_logps = policy_chosen_logps / chosen_len  # all_logps / loss_mask.sum(-1)
        policy_rejected_logps = policy_rejected_logps / rejected_len
        reference_chosen_logps = reference_chosen_logps / chosen_len
        reference_rejected_logps = reference_rejected_logps / rejected_len
        pi_logratios = policy_chosen_logps - policy_rejected_logps
        ref_logratios = reference_chosen_logps - reference_rejected_logps
        logits = pi_logratios - ref_logratios
        return (logits - 1 / (2 * beta)) ** 2

    expected = trl_ipo(pc, pr, rc, rr, len_c, len_r)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta, "ipo", len_c, len_r), expected, rtol=1e-6, atol=0)
    # The raw-sum form this replaces differs by orders of magnitude on long responses.
    raw = ((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2
    assert (raw - expected).abs().max() > 10
