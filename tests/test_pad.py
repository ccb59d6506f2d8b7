"""PAD (arXiv 2502.14272): golden tests against brute force written here in plain Python (no torch in the
references), properties of the ranking distributions, the released code's batch-coupled JSD derived by hand,
the large-n decomposition, and the method end to end on a tiny model."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
from pydantic import ValidationError

from harness.methods.base import PromptGroup, Signal, TrainContext
from harness.methods.pad import PADMethod, keep_group, teacher_scores
from harness.methods.pad_loss import (
    RankingSupport,
    choose_topk,
    jensen_shannon,
    pad_loss,
    plackett_luce_log_probs,
    plackett_luce_prefix_log_probs,
)
from harness.models.base import LoadedModel

KINDS = ("ppd", "vpd", "kl", "reverse_kl")


# ---------------------------------------------------------------- brute force, plain Python only
def bf_logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(math.fsum(math.exp(x - top) for x in xs))


def bf_ranking_logprob(scores: list[float], ranking: tuple[int, ...]) -> float:
    return math.fsum(
        scores[ranking[k]] - bf_logsumexp([scores[j] for j in ranking[k:]]) for k in range(len(ranking))
    )


def bf_dist(scores: list[float]) -> list[float]:
    return [bf_ranking_logprob(scores, p) for p in itertools.permutations(range(len(scores)))]


def bf_prefix_dist(scores: list[float], k: int) -> list[float]:
    """Top-k marginal by summing full-ranking probabilities over every completion of each prefix."""
    n = len(scores)
    full = dict(zip(itertools.permutations(range(n)), bf_dist(scores), strict=True))
    return [
        math.log(math.fsum(math.exp(lp) for perm, lp in full.items() if perm[:k] == prefix))
        for prefix in itertools.permutations(range(n), k)
    ]


def bf_kl(lp: list[float], lq: list[float]) -> float:
    return math.fsum(math.exp(a) * (a - b) for a, b in zip(lp, lq, strict=True))


def bf_jsd(lp: list[float], lq: list[float]) -> float:
    lm = [math.log(0.5 * (math.exp(a) + math.exp(b))) for a, b in zip(lp, lq, strict=True)]
    return 0.5 * bf_kl(lp, lm) + 0.5 * bf_kl(lq, lm)


def bf_loss(kind: str, s: list[float], t: list[float]) -> float:
    ls, lt = bf_dist(s), bf_dist(t)
    if kind == "ppd":
        return bf_jsd(lt, ls)
    if kind == "kl":
        return bf_kl(lt, ls)
    if kind == "reverse_kl":
        return bf_kl(ls, lt)
    best = max(itertools.permutations(range(len(t))), key=lambda p: bf_ranking_logprob(t, p))
    return -bf_ranking_logprob(s, best)


def random_scores(rng: random.Random, b: int, n: int, scale: float = 3.0) -> list[list[float]]:
    return [[rng.uniform(-scale, scale) for _ in range(n)] for _ in range(b)]


def t64(x: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------- golden values
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_log_probs_match_brute_force(n: int) -> None:
    rng = random.Random(n)
    scores = random_scores(rng, 3, n)
    got = plackett_luce_log_probs(t64(scores))
    assert got.shape == (3, math.factorial(n))
    for row, s in zip(got.tolist(), scores, strict=True):
        assert max(abs(a - b) for a, b in zip(row, bf_dist(s), strict=True)) < 1e-6


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("kind", KINDS)
def test_losses_match_brute_force(n: int, kind: str) -> None:
    rng = random.Random(100 * n + KINDS.index(kind))
    s, t = random_scores(rng, 4, n), random_scores(rng, 4, n)
    want = math.fsum(bf_loss(kind, si, ti) for si, ti in zip(s, t, strict=True)) / 4
    assert abs(pad_loss(t64(s), t64(t), kind).item() - want) < 1e-6


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_probabilities_sum_to_one(n: int) -> None:
    scores = torch.randn(2, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * 4
    assert torch.allclose(
        plackett_luce_log_probs(scores).exp().sum(-1), torch.ones(2, 3, dtype=torch.float64)
    )


def test_jsd_symmetric_zero_iff_equal_and_bounded() -> None:
    gen = torch.Generator().manual_seed(0)
    a = plackett_luce_log_probs(torch.randn(5, 4, dtype=torch.float64, generator=gen))
    b = plackett_luce_log_probs(torch.randn(5, 4, dtype=torch.float64, generator=gen))
    assert torch.allclose(jensen_shannon(a, b), jensen_shannon(b, a), atol=1e-12)
    assert torch.all(jensen_shannon(a, b) > 1e-6)
    assert torch.allclose(jensen_shannon(a, a), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # Nearly disjoint distributions approach ln 2 and never exceed it.
    far = plackett_luce_log_probs(torch.tensor([[1e3, 0.0, -1e3]], dtype=torch.float64))
    near = plackett_luce_log_probs(torch.tensor([[-1e3, 0.0, 1e3]], dtype=torch.float64))
    jsd = jensen_shannon(far, near).item()
    assert math.log(2) - 1e-9 < jsd <= math.log(2) + 1e-12
    assert pad_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]])).item() == pytest.approx(
        0, abs=1e-7
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("kind", "compat", "support"),
    [
        *[(k, False, None) for k in KINDS],
        ("ppd", True, None),
        ("ppd", False, RankingSupport(exact_max_n=3, topk=2)),
        ("kl", False, RankingSupport(exact_max_n=3, topk=2)),
        ("ppd", False, RankingSupport(exact_max_n=3, decomposition="sampled", num_samples=64)),
        ("reverse_kl", False, RankingSupport(exact_max_n=3, decomposition="sampled", num_samples=64)),
    ],
)
def test_gradients_finite_for_extreme_scores(
    dtype: torch.dtype, kind: str, compat: bool, support: RankingSupport | None
) -> None:
    student = torch.tensor(
        [[1e3, -1e3, 0.0, 5e2, -5e2], [-1e3, -1e3, 1e3, 1e3, 0.0]], dtype=dtype, requires_grad=True
    )
    teacher = torch.tensor([[-1e3, 1e3, 0.0, -5e2, 5e2], [1e3, 0.0, -1e3, 1e3, -1e3]], dtype=dtype)
    loss = pad_loss(student, teacher, kind, compat, support, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(kind: str) -> None:
    gen = torch.Generator().manual_seed(5)
    s = torch.randn(2, 4, dtype=torch.float64, generator=gen).requires_grad_()
    t = torch.randn(2, 4, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda x: pad_loss(x, t, kind), (s,))
    # Both arguments of the JSD (the loss itself detaches the teacher).
    a = plackett_luce_log_probs(torch.randn(2, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    b = plackett_luce_log_probs(torch.randn(2, 3, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(jensen_shannon, (a, b))


def test_teacher_is_detached() -> None:
    s, t = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    pad_loss(s, t).backward()
    assert t.grad is None and s.grad is not None


# ---------------------------------------------------------------- the released code's batch-coupled JSD
def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def hand_compat_loss(s: list[list[float]], t: list[list[float]]) -> float:
    """n = 2: rankings (0,1), (1,0) with P = (sigmoid(x0 - x1), sigmoid(x1 - x0)). M sums all four rows
    of probabilities and halves them (it is NOT normalised when b > 1); KL(M||P) = sum M (log M - log P)."""

    def probs(x: list[float]) -> list[float]:
        return [sigmoid(x[0] - x[1]), sigmoid(x[1] - x[0])]

    ps, pt = [probs(x) for x in s], [probs(x) for x in t]
    m = [0.5 * (ps[0][j] + ps[1][j] + pt[0][j] + pt[1][j]) for j in range(2)]
    per = [
        0.5
        * sum(
            m[j] * (math.log(m[j]) - math.log(ps[i][j])) + m[j] * (math.log(m[j]) - math.log(pt[i][j]))
            for j in range(2)
        )
        for i in range(2)
    ]
    return (per[0] + per[1]) / 2


COMPAT_S = [[1.0, 0.0], [0.0, 0.5]]
COMPAT_T = [[0.0, 2.0], [1.0, -1.0]]


def test_reference_code_compat_hand_derived() -> None:
    want = hand_compat_loss(COMPAT_S, COMPAT_T)
    # The same number written out: P_S rows (.7311, .2689), (.3775, .6225); P_T rows (.1192, .8808),
    # (.8808, .1192); M = (1.0543, .9457), which sums to 2 = b.
    assert want == pytest.approx(1.89176, abs=1e-4)
    s = t64(COMPAT_S, grad=True)
    got = pad_loss(s, t64(COMPAT_T), "ppd", reference_code_compat=True)
    assert abs(got.item() - want) < 1e-9
    default = pad_loss(t64(COMPAT_S), t64(COMPAT_T), "ppd")
    assert abs(default.item() - want) > 0.1
    # Gradients flow through M as well: compare with central differences of the hand formula.
    got.backward()
    assert s.grad is not None
    for i, j in itertools.product(range(2), range(2)):
        up = [row[:] for row in COMPAT_S]
        down = [row[:] for row in COMPAT_S]
        up[i][j] += 1e-6
        down[i][j] -= 1e-6
        fd = (hand_compat_loss(up, COMPAT_T) - hand_compat_loss(down, COMPAT_T)) / 2e-6
        assert abs(s.grad[i, j].item() - fd) < 1e-6


def test_reference_code_compat_n3_brute_force_and_batch_dependence() -> None:
    rng = random.Random(7)
    s, t = random_scores(rng, 2, 3), random_scores(rng, 2, 3)
    ls, lt = [bf_dist(x) for x in s], [bf_dist(x) for x in t]
    m = [0.5 * math.fsum(math.exp(row[j]) for row in ls + lt) for j in range(6)]
    want = (
        math.fsum(
            0.5 * math.fsum(m[j] * (2 * math.log(m[j]) - ls[i][j] - lt[i][j]) for j in range(6))
            for i in range(2)
        )
        / 2
    )
    assert abs(pad_loss(t64(s), t64(t), "ppd", True).item() - want) < 1e-9
    # Batch-coupled: the loss of the pair is not the mean of the single-example losses.
    single = [pad_loss(t64([s[i]]), t64([t[i]]), "ppd", True).item() for i in range(2)]
    assert abs(sum(single) / 2 - want) > 1e-3
    with pytest.raises(ValueError, match="kind='ppd'"):
        pad_loss(t64(s), t64(t), "kl", True)


# ---------------------------------------------------------------- decomposition for large n
@pytest.mark.parametrize("n", [3, 4, 5, 6])
@pytest.mark.parametrize("kind", ["ppd", "kl", "reverse_kl"])
def test_topk_with_n_minus_1_stages_is_exact(n: int, kind: str) -> None:
    rng = random.Random(n)
    s, t = t64(random_scores(rng, 3, n)), t64(random_scores(rng, 3, n))
    decomposed = pad_loss(s, t, kind, support=RankingSupport(exact_max_n=1, topk=n - 1))
    assert abs(decomposed.item() - pad_loss(s, t, kind).item()) < 1e-9


@pytest.mark.parametrize("kind", ["ppd", "kl", "reverse_kl"])
def test_topk_stages_are_the_prefix_marginals(kind: str) -> None:
    rng = random.Random(11)
    s, t = random_scores(rng, 2, 5), random_scores(rng, 2, 5)
    got = plackett_luce_prefix_log_probs(t64(s), 2)
    for row, x in zip(got.tolist(), s, strict=True):
        assert max(abs(a - b) for a, b in zip(row, bf_prefix_dist(x, 2), strict=True)) < 1e-9
    support = RankingSupport(exact_max_n=4, max_prefixes=20)  # 5*4 = 20 prefixes: k = 2, chosen automatically
    want = 0.0
    for x, y in zip(s, t, strict=True):
        ls, lt = bf_prefix_dist(x, 2), bf_prefix_dist(y, 2)
        want += {"ppd": bf_jsd(lt, ls), "kl": bf_kl(lt, ls), "reverse_kl": bf_kl(ls, lt)}[kind] / 2
    assert abs(pad_loss(t64(s), t64(t), kind, support=support).item() - want) < 1e-9
    # A marginal divergence never exceeds the full one (data processing).
    assert pad_loss(t64(s), t64(t), kind, support=support).item() <= pad_loss(t64(s), t64(t), kind).item()


def test_enumeration_is_refused_when_too_large() -> None:
    with pytest.raises(ValueError, match="decomposition"):
        pad_loss(torch.randn(1, 16), torch.randn(1, 16), support=RankingSupport(exact_max_n=16))


def test_choose_topk() -> None:
    assert choose_topk(16, 4096) == 3  # 16*15*14 = 3360
    assert choose_topk(5, 4096) == 4  # exact
    assert choose_topk(16, 1) == 1


@pytest.mark.parametrize("kind", ["ppd", "kl", "reverse_kl"])
def test_sampled_decomposition_is_unbiased(kind: str) -> None:
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(3, 4, dtype=torch.float64, generator=gen).mul(2).requires_grad_()
    t = torch.randn(3, 4, dtype=torch.float64, generator=gen) * 2
    exact = pad_loss(s, t, kind)
    (exact_grad,) = torch.autograd.grad(exact, s)
    support = RankingSupport(exact_max_n=3, decomposition="sampled", num_samples=20000)
    est = pad_loss(s, t, kind, support=support, generator=gen)
    (est_grad,) = torch.autograd.grad(est, s)
    assert est.item() == pytest.approx(exact.item(), rel=0.03)
    cos = torch.nn.functional.cosine_similarity(est_grad.flatten(), exact_grad.flatten(), dim=0)
    assert cos > 0.99
    assert (est_grad - exact_grad).norm() < 0.1 * exact_grad.norm()


@pytest.mark.parametrize("decomposition", ["topk", "sampled"])
@pytest.mark.parametrize("kind", ["ppd", "vpd"])
def test_n16_trains_without_enumeration(decomposition: str, kind: str) -> None:
    s = torch.randn(4, 16, requires_grad=True)
    loss = pad_loss(s, torch.randn(4, 16), kind, support=RankingSupport(decomposition=decomposition))
    loss.backward()
    assert (
        torch.isfinite(loss)
        and s.grad is not None
        and torch.isfinite(s.grad).all()
        and s.grad.abs().sum() > 0
    )


# ---------------------------------------------------------------- the method
def group(
    pid: str, responses: list[str], pref: list[list[float]], avg: list[float] | None = None
) -> PromptGroup:
    signals: dict[str, object] = {Signal.MCQ_PREFERENCE: pref}
    if avg is not None:
        signals[Signal.TEACHER_AVG_LOGPROB] = avg
    return PromptGroup(pid, [{"role": "user", "content": f"Question {pid}?"}], responses, signals)


PREF_A = [[0.5, 0.8, 0.9], [0.2, 0.5, 0.6], [0.1, 0.4, 0.5]]
PREF_B = [[0.5, 0.3, 0.45], [0.7, 0.5, 0.65], [0.55, 0.35, 0.5]]


def two_groups() -> list[PromptGroup]:
    return [
        group("a", ["Yes.", "Maybe so.", "No idea at all"], PREF_A, [-1.0, -2.0, -3.0]),
        group("b", ["Blue", "It is blue.", "Sky"], PREF_B, [-0.5, -0.7, -2.5]),
    ]


def test_signals_needed_depend_on_alpha() -> None:
    mcq, avg = Signal.MCQ_PREFERENCE, Signal.TEACHER_AVG_LOGPROB
    assert PADMethod().signals_needed() == {mcq}
    assert PADMethod({"alpha": 0.5}).signals_needed() == {mcq, avg}
    assert PADMethod({"alpha": 1.0, "mcq_filter": False}).signals_needed() == {avg}
    assert PADMethod({"alpha": 1.0}).signals_needed() == {mcq, avg}  # the filter still reads MCQ


def test_params_validated() -> None:
    with pytest.raises(ValidationError):
        PADMethod({"betta": 1.0})
    with pytest.raises(ValidationError):
        PADMethod({"kind": "vpd", "reference_code_compat": True})
    with pytest.raises(ValidationError):
        PADMethod({"alpha": 1.5})


def test_filter_keeps_prompts_with_a_preference() -> None:
    tie = group("tie", ["x", "y"], [[0.5, 0.5], [0.5, 0.5]])
    all_win = group("all_win", ["x", "y"], [[0.5, 0.6], [0.6, 0.5]])  # uncalibrated MCQ: both above 0.5
    win = group("win", ["x", "y"], [[0.5, 0.51], [0.49, 0.5]])
    groups = [tie, all_win, win, *two_groups()]
    assert [keep_group(g) for g in groups] == [False, False, True, True, True]
    assert [g.prompt_id for g in PADMethod().filter_groups(groups)] == ["win", "a", "b"]
    assert len(PADMethod({"mcq_filter": False}).filter_groups(groups)) == 5


def test_teacher_scores_formula() -> None:
    g = two_groups()[0]
    wins = [(0.8 + 0.9) / 2, (0.2 + 0.6) / 2, (0.1 + 0.4) / 2]
    assert teacher_scores(g, 10.0, 0.0) == pytest.approx([10 * math.log(w) for w in wins])
    assert teacher_scores(g, 2.0, 0.25) == pytest.approx(
        [2 * (0.25 * a + 0.75 * math.log(w)) for a, w in zip([-1.0, -2.0, -3.0], wins, strict=True)]
    )
    assert teacher_scores(g, 1.0, 1.0) == pytest.approx([-1.0, -2.0, -3.0])
    never = group("never", ["x", "y"], [[0.5, 0.0], [1.0, 0.5]])  # m = (0, 1): log 0 is floored, not -inf
    assert teacher_scores(never, 10.0, 0.0) == pytest.approx([10 * math.log(1e-6), 0.0])


def manual_mean_logprob(model: torch.nn.Module, prompt: list[int], response: list[int]) -> float:
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    picked = logp[torch.arange(len(targets)), targets][len(prompt) - 1 :]
    return float(picked.mean())


def test_method_end_to_end(tiny_student: LoadedModel) -> None:
    method = PADMethod({"beta": 2.0})
    fmt = tiny_student.formatter
    ctx = TrainContext(formatter=fmt, max_length=96, max_prompt_length=48)
    groups = method.filter_groups(two_groups())
    examples = method.build_examples(groups, random.Random(0))
    assert [ex["prompt_id"] for ex in examples] == ["a", "b"]
    batch = method.collate(examples, ctx)
    prompts = [fmt.prompt_ids(g.messages, max_length=48) for g in groups]
    responses = [[fmt.response_ids(r, max_length=96) for r in g.responses] for g in groups]
    assert batch["student_tokens"] == sum(
        len(p) + len(r) for p, rs in zip(prompts, responses, strict=True) for r in rs
    )
    assert batch["packed"].response_mask.sum().item() == sum(len(r) for rs in responses for r in rs)

    model = tiny_student.model
    out = method.loss(model, batch, ctx)
    assert torch.isfinite(out.loss)
    # The metric's JSD from student scores recomputed here response by response (no padding, no packing).
    s = [
        [2.0 * manual_mean_logprob(model, p, r) for r in rs] for p, rs in zip(prompts, responses, strict=True)
    ]
    t = [ex["teacher_scores"] for ex in examples]
    want_jsd = sum(bf_jsd(bf_dist(ti), bf_dist(si)) for si, ti in zip(s, t, strict=True)) / 2
    assert out.metrics["pad_jsd"] == pytest.approx(want_jsd, abs=1e-5)
    assert out.loss.item() == pytest.approx(want_jsd, abs=1e-5)  # kind="ppd": the loss IS the mean JSD
    assert out.metrics["pad_agreement"] == pytest.approx(1 - want_jsd / math.log(2), abs=1e-6)

    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0

    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(6):
        ctx.step = step
        out = method.loss(model, batch, ctx)
        losses.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_collate_rejects_mixed_response_counts(tiny_student: LoadedModel) -> None:
    method = PADMethod()
    examples = method.build_examples(
        [two_groups()[0], group("c", ["x", "y"], [[0.5, 0.9], [0.1, 0.5]])], random.Random(0)
    )
    ctx = TrainContext(formatter=tiny_student.formatter, max_length=64, max_prompt_length=32)
    with pytest.raises(ValueError, match="same number of responses"):
        method.collate(examples, ctx)


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "vpd"},
        {"alpha": 0.5, "kind": "kl"},
        {"kind": "reverse_kl", "mcq_filter": False},
        {"reference_code_compat": True},
        {"exact_max_n": 2, "decomposition": "sampled", "num_samples": 32},
        {"exact_max_n": 2, "topk": 1},
    ],
)
def test_method_variants_train(tiny_student: LoadedModel, params: dict[str, object]) -> None:
    method = PADMethod(params)
    ctx = TrainContext(formatter=tiny_student.formatter, max_length=64, max_prompt_length=32)
    batch = method.collate(method.build_examples(method.filter_groups(two_groups()), random.Random(0)), ctx)
    out = method.loss(tiny_student.model, batch, ctx)
    out.loss.backward()
    assert torch.isfinite(out.loss) and 0.0 <= out.metrics["pad_agreement"] <= 1.0
    assert all(torch.isfinite(p.grad).all() for p in tiny_student.model.parameters() if p.grad is not None)
    assert set(out.metrics) >= {"loss", "pad_jsd", "pad_agreement"}
