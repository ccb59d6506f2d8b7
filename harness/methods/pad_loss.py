"""PAD's losses as pure tensor functions (Gu et al. 2025, Preference-Aligned Distillation, arXiv 2502.14272).

PAD treats a language model's length-normalised log-likelihood as its reward and turns the rewards of n
responses into a Plackett-Luce distribution over all n! rankings,
    P(tau) = prod_k exp(s_tau(k)) / sum_{j>=k} exp(s_tau(j)),
then trains the student's ranking distribution P_S towards the teacher's P_T (teacher detached):
  - "ppd"        Jensen-Shannon divergence JSD(P_T, P_S) per example (the paper's headline PAD-PPD);
  - "vpd"        -log P_S(tau*), tau* = the teacher's best ranking (argsort of t, descending; PAD-VPD);
  - "kl"         KL(P_T || P_S);   "reverse_kl"  KL(P_S || P_T).
All losses are means over the batch. Rankings are in `itertools.permutations(range(n))` order.

`reference_code_compat=True` ("ppd" only) reproduces the released code, which differs from the textbook
JSD in two ways: it computes KL(M||P) instead of KL(P||M), and it builds M across the micro-batch:
log M = logsumexp over the 2b stacked rows [log P_S; log P_T] + log 0.5 (one row broadcast to every example),
loss_i = 0.5 * (KL(M||P_S,i) + KL(M||P_T,i)), gradients flowing through M. It depends on the batch size
(with b = 1 M is the true mixture); use it only to match the released run.

Preference decomposition (this project's interpretation; the paper names a decomposing strategy to cut
the n! cost, the released code has none). Exact enumeration is used while n <= `exact_max_n`; beyond it:
  - "topk" (default): the distribution over the ordered first k positions of the ranking, i.e. the first
    k Plackett-Luce stages, P(tau_1..tau_k) = prod_{m<=k} exp(s_tau_m) / sum_{j not in tau_<m} exp(s_j),
    over n!/(n-k)! prefixes, with k the largest that keeps the count <= `max_prefixes` (or given). It is
    EXACT for k >= n-1 (the last position is forced) and, for smaller k, a deterministic divergence
    between the top-k marginals: it never exceeds the full one (data processing) and is zero iff the
    top-k marginals agree; the head of the ranking is what preference alignment is about.
  - "sampled": an unbiased Monte-Carlo estimate of the FULL divergence and of its gradient. S rankings
    are drawn by Gumbel-argsort, half from P_T and half from (detached) P_S, i.e. from the detached
    mixture Q = (S_T P_T + S_S P_S) / S (balance-heuristic multiple importance sampling); each kind's
    per-ranking term f(tau) is weighted by 1 / (S Q(tau)). Since P_T/Q and P_S/Q are at most 2 (half
    and half) the weights are bounded, so the variance stays small. The gradient is unbiased because Q
    is a fixed proposal: grad E_Q[f/Q] = E_Q[grad f / Q].
VPD never needs the decomposition: -log P_S of one ranking costs O(n).

Cost: all n!/(n-k)! prefix log-probabilities are built level by level over the cached prefix tree
(`_prefix_tree`), O(b * n!/(n-k)!) time and memory with no [b, n!, n] intermediate, and the exact JSD has
a closed-form backward (`_ExactJSD`). No Python loop runs over examples or rankings, only over positions.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch

LossKind = Literal["ppd", "vpd", "kl", "reverse_kl"]
Decomposition = Literal["topk", "sampled"]
LOSS_KINDS: tuple[str, ...] = ("ppd", "vpd", "kl", "reverse_kl")
LN2 = math.log(2.0)
MAX_ENUMERATED = math.factorial(10)  # rankings (or prefixes) per example; beyond this, decompose


@dataclass(frozen=True)
class _PrefixTree:
    """The ordered k-prefixes of range(n) as a tree, level by level, in itertools order.

    `itertools.permutations(range(n), L)` lists each level-(L-1) node's n-L+1 children contiguously,
    so the log-probability of every level-L prefix is its parent's plus one Plackett-Luce stage term
    s[item] - logsumexp(s[remaining]); a reshape does the broadcast. The remaining sets are U distinct
    subsets (2^n - 1 at most), each log-sum-exp'd once. Cost O(b * n!/(n-k)!), no [b, n!, n] tensor:
    on CPU this is an order of magnitude faster than logcumsumexp or a dense stage-count matmul.
    """

    items: tuple[torch.Tensor, ...]  # per level L: [n!/(n-L)!] the item placed at position L
    sets: tuple[torch.Tensor, ...]  # per level L: [n!/(n-L)!] index into set_masks: items left before it
    set_masks: torch.Tensor  # [U, n] bool


@lru_cache(maxsize=32)
def _prefix_tree(n: int, k: int, device: str) -> _PrefixTree:
    full = (1 << n) - 1
    items, befores = [], []
    for level in range(1, k + 1):
        prefixes = torch.tensor(list(itertools.permutations(range(n), level)), dtype=torch.long)
        placed = (torch.ones_like(prefixes[:, :-1]) << prefixes[:, :-1]).sum(-1)  # distinct bits: sum == or
        items.append(prefixes[:, -1])
        befores.append(full - placed)
    subsets = torch.unique(torch.cat(befores))
    set_masks = ((subsets.unsqueeze(-1) >> torch.arange(n)) & 1).bool()
    sets = [torch.searchsorted(subsets, b) for b in befores]
    return _PrefixTree(
        tuple(t.to(device) for t in items), tuple(t.to(device) for t in sets), set_masks.to(device)
    )


@lru_cache(maxsize=16)
def permutation_index(n: int) -> torch.Tensor:
    """All n! rankings of range(n) as a [n!, n] long tensor (CPU, cached), in `itertools.permutations`
    order: the ranking each column of `plackett_luce_log_probs` refers to."""
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long).reshape(-1, n)


def _suffix_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """out[..., k] = logsumexp(x[..., k:]): the Plackett-Luce stage normalisers of given rankings. A loop
    over the n positions (not over rankings): on CPU torch.logcumsumexp is far slower for short rows."""
    out = [x[..., -1]]
    for k in range(x.shape[-1] - 2, -1, -1):
        out.append(torch.logaddexp(x[..., k], out[-1]))
    return torch.stack(out[::-1], dim=-1)


def ranking_log_prob(scores: torch.Tensor, rankings: torch.Tensor) -> torch.Tensor:
    """log P(ranking) for given full rankings: scores [b, n], rankings [b, R, n] -> [b, R]."""
    ordered = torch.gather(scores.unsqueeze(-2).expand(*rankings.shape), -1, rankings)
    return (ordered - _suffix_logsumexp(ordered)).sum(-1)


def plackett_luce_log_probs(scores: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of all n! rankings: scores [..., n] -> [..., n!] (itertools.permutations order)."""
    return plackett_luce_prefix_log_probs(scores, scores.shape[-1])


def plackett_luce_prefix_log_probs(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Log-probabilities of the ordered top-k prefixes: [..., n] -> [..., n!/(n-k)!], in the order of
    `itertools.permutations(range(n), k)`. For k >= n-1 these are the full rankings' log-probabilities."""
    n = scores.shape[-1]
    if n == 1:
        return torch.zeros_like(scores)
    k = min(k, n - 1)  # the last position is forced: its stage contributes log 1
    if math.perm(n, k) > MAX_ENUMERATED:
        raise ValueError(
            f"enumerating {math.perm(n, k)} rankings of {n} responses is too large (limit {MAX_ENUMERATED}); "
            f"lower exact_max_n or topk so that the decomposition handles n={n}"
        )
    tree = _prefix_tree(n, k, str(scores.device))
    batch_shape = scores.shape[:-1]
    if scores.dtype.itemsize >= 4:  # bf16 scores are taken as given: the released bf16 run did not shift
        scores = scores - scores.detach().mean(-1, keepdim=True)  # PL is shift-invariant; keeps fp32 terms small
    log_norms = torch.logsumexp(scores.unsqueeze(-2).masked_fill(~tree.set_masks, float("-inf")), dim=-1)
    # [rows, batch] layout: index_select of whole rows (and its index_add backward) is fast on CPU.
    flat_scores = scores.reshape(-1, n).T.contiguous()
    flat_norms = log_norms.reshape(-1, log_norms.shape[-1]).T.contiguous()
    acc: torch.Tensor | None = None
    for level, (item, subset) in enumerate(zip(tree.items, tree.sets, strict=True), start=1):
        stage = flat_scores.index_select(0, item) - flat_norms.index_select(0, subset)
        if acc is None:
            acc = stage
        else:
            acc = (acc.unsqueeze(1) + stage.view(acc.shape[0], n - level + 1, -1)).reshape(stage.shape)
    assert acc is not None
    return acc.T.reshape(*batch_shape, acc.shape[0])


def _num_prefixes(n: int, k: int) -> int:
    return math.perm(n, k)


def choose_topk(n: int, max_prefixes: int) -> int:
    """The largest k (>= 1) with n!/(n-k)! <= max_prefixes, capped at n-1 (where top-k is exact)."""
    k = 1
    while k + 1 <= n - 1 and _num_prefixes(n, k + 1) <= max_prefixes:
        k += 1
    return k


def sample_rankings(scores: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`num` Plackett-Luce samples per row by Gumbel-argsort: [..., n] -> [..., num, n] long."""
    shape = (*scores.shape[:-1], num, scores.shape[-1])
    u = torch.rand(shape, generator=generator, dtype=torch.float64).to(scores.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
    return torch.argsort(scores.detach().unsqueeze(-2).double() + gumbel, dim=-1, descending=True)


class _ExactJSD(torch.autograd.Function):
    """JSD(P, Q) per row from full log-probability rows, with the closed-form gradient
    dJSD/dlog p_r = 0.5 p_r (log p_r - log m_r) (the mixture terms cancel). Same value as the autograd
    formula, about half the elementwise passes over [b, n!] (the dominant cost at n = 8)."""

    @staticmethod
    def forward(ctx: Any, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        log_m = torch.logaddexp(log_p, log_q) - LN2
        weighted_p = log_p.exp() * (log_p - log_m)
        weighted_q = log_q.exp() * (log_q - log_m)
        ctx.save_for_backward(
            weighted_p if ctx.needs_input_grad[0] else None, weighted_q if ctx.needs_input_grad[1] else None
        )
        return 0.5 * (weighted_p + weighted_q).sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        weighted_p, weighted_q = ctx.saved_tensors
        scale = 0.5 * grad.unsqueeze(-1)
        return (
            None if weighted_p is None else scale * weighted_p,
            None if weighted_q is None else scale * weighted_q,
        )


def divergence_terms(
    kind: str, log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, log_q: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-example divergence [b] from ranking log-probs [b, R].

    With `log_q` None the R rankings are the whole (or the top-k marginal) support; otherwise they are
    samples from the proposal Q and the result is the importance-weighted mean of f(tau) / Q(tau).
    """
    if log_q is None:
        if kind == "ppd":
            return _ExactJSD.apply(log_p_teacher, log_p_student)  # type: ignore[no-any-return]
        weight_t, weight_s = log_p_teacher.exp(), log_p_student.exp()
    else:
        weight_t, weight_s = torch.exp(log_p_teacher - log_q), torch.exp(log_p_student - log_q)
    if kind == "kl":
        terms = weight_t * (log_p_teacher - log_p_student)
    elif kind == "reverse_kl":
        terms = weight_s * (log_p_student - log_p_teacher)
    elif kind == "ppd":
        log_m = torch.logaddexp(log_p_teacher, log_p_student) - LN2
        terms = 0.5 * (weight_t * (log_p_teacher - log_m) + weight_s * (log_p_student - log_m))
    else:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of 'ppd', 'kl', 'reverse_kl'")
    return terms.sum(-1) if log_q is None else terms.mean(-1)


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JSD(P, Q) in nats over the last dim, from log-probabilities; symmetric, in [0, ln 2]."""
    return divergence_terms("ppd", log_p, log_q)


def reference_code_jsd(log_p_student: torch.Tensor, log_p_teacher: torch.Tensor) -> torch.Tensor:
    """The released code's batch-coupled "JSD" (see the module docstring): a scalar, mean over examples."""
    stacked = torch.cat([log_p_student, log_p_teacher], dim=0)  # [2b, R]
    # In bf16, log 0.5 rounded to bf16 as the release's `new_tensor(0.5).log()` (fp32: math.log, as always)
    half = math.log(0.5) if stacked.dtype.itemsize >= 4 else stacked.new_tensor(0.5).log()
    log_m = torch.logsumexp(stacked, dim=0, keepdim=True) + half  # [1, R]
    m = log_m.exp()
    kl_m_student = (m * (log_m - log_p_student)).sum(-1)
    kl_m_teacher = (m * (log_m - log_p_teacher)).sum(-1)
    return (0.5 * (kl_m_student + kl_m_teacher)).mean()


def vpd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """Per-example -log P_S(tau*), tau* = argsort(t) descending (stable on ties): [b, n] -> [b]. O(n)."""
    best = torch.argsort(teacher_scores.detach(), dim=-1, descending=True, stable=True)
    return -ranking_log_prob(student_scores, best.unsqueeze(-2)).squeeze(-1)


@dataclass(frozen=True)
class RankingSupport:
    """Which rankings a divergence runs over: all n! while n <= `exact_max_n`, else the decomposition
    ("topk" with `topk` positions, default the most that keep <= `max_prefixes` prefixes; or "sampled"
    with `num_samples` rankings per example)."""

    exact_max_n: int = 8
    decomposition: Decomposition = "topk"
    topk: int | None = None
    max_prefixes: int = 4096
    num_samples: int = 256

    def is_exact(self, n: int) -> bool:
        if self.decomposition not in ("topk", "sampled"):
            raise ValueError(f"unknown decomposition {self.decomposition!r}; expected 'topk' or 'sampled'")
        if n <= self.exact_max_n:
            return True
        return self.decomposition == "topk" and (self.topk or choose_topk(n, self.max_prefixes)) >= n - 1


def ranking_distributions(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    support: RankingSupport | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(log P_T, log P_S, log Q or None), each [..., R]: exact when n <= exact_max_n, else decomposed."""
    support = support or RankingSupport()
    teacher_scores = teacher_scores.detach()
    n = student_scores.shape[-1]
    if support.is_exact(n):
        return plackett_luce_log_probs(teacher_scores), plackett_luce_log_probs(student_scores), None
    if support.decomposition == "topk":
        k = support.topk or choose_topk(n, support.max_prefixes)
        return (
            plackett_luce_prefix_log_probs(teacher_scores, k),
            plackett_luce_prefix_log_probs(student_scores, k),
            None,
        )
    if support.num_samples < 2:
        raise ValueError("num_samples must be >= 2 (half from the teacher, half from the student)")
    from_teacher = support.num_samples // 2
    from_student = support.num_samples - from_teacher
    rankings = torch.cat(
        [
            sample_rankings(teacher_scores, from_teacher, generator),
            sample_rankings(student_scores, from_student, generator),
        ],
        dim=-2,
    )
    log_p_teacher = ranking_log_prob(teacher_scores, rankings)
    log_p_student = ranking_log_prob(student_scores, rankings)
    log_q = torch.logaddexp(
        log_p_teacher + math.log(from_teacher / support.num_samples),
        log_p_student.detach() + math.log(from_student / support.num_samples),
    )
    return log_p_teacher, log_p_student, log_q


def _check(student_scores: torch.Tensor, teacher_scores: torch.Tensor, kind: str, compat: bool) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown PAD loss kind {kind!r}; expected one of {', '.join(LOSS_KINDS)}")
    if compat and kind != "ppd":
        raise ValueError("reference_code_compat reproduces the released code's JSD; it needs kind='ppd'")
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(
            f"scores must both be [batch, n]; got {tuple(student_scores.shape)} and "
            f"{tuple(teacher_scores.shape)}"
        )


def pad_loss_and_jsd(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    kind: LossKind = "ppd",
    reference_code_compat: bool = False,
    support: RankingSupport | None = None,
    generator: torch.Generator | None = None,
    with_jsd: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-example JSD(P_T, P_S), no gradient) from ONE enumeration or sampling pass. The JSD
    runs over the same support as the loss: exact, top-k marginals, or the unbiased sampled estimate
    (NaN when `with_jsd` is False and the loss is not the JSD itself)."""
    _check(student_scores, teacher_scores, kind, reference_code_compat)
    support = support or RankingSupport()
    teacher_scores = teacher_scores.detach()
    n = student_scores.shape[-1]
    if reference_code_compat and not support.is_exact(n):
        raise ValueError(
            f"reference_code_compat enumerates all n! rankings; n={n} > exact_max_n={support.exact_max_n}"
        )
    log_pt, log_ps, log_q = ranking_distributions(student_scores, teacher_scores, support, generator)
    if kind == "ppd" and not reference_code_compat:
        per_example = divergence_terms(kind, log_pt, log_ps, log_q)
        return per_example.mean(), per_example.detach()
    jsd = torch.full_like(log_pt[..., 0], float("nan"))
    if with_jsd:
        with torch.no_grad():
            jsd = divergence_terms("ppd", log_pt, log_ps, log_q)
    if kind == "vpd":
        loss = vpd_loss(student_scores, teacher_scores).mean()
    elif reference_code_compat:
        loss = reference_code_jsd(log_ps, log_pt)
    else:
        loss = divergence_terms(kind, log_pt, log_ps, log_q).mean()
    return loss, jsd


def pad_loss(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    kind: LossKind = "ppd",
    reference_code_compat: bool = False,
    support: RankingSupport | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean PAD loss over the batch: scores [b, n] (already multiplied by beta), teacher detached.
    `support` picks exact enumeration vs the decomposition (see the module docstring)."""
    if kind == "vpd":
        _check(student_scores, teacher_scores, kind, reference_code_compat)
        return vpd_loss(student_scores, teacher_scores.detach()).mean()
    return pad_loss_and_jsd(
        student_scores, teacher_scores, kind, reference_code_compat, support, generator, with_jsd=False
    )[0]
