"""PAD's losses as pure tensor functions (Gu et al. 2025, "Preference-Aligned Distillation", arXiv 2502.14272).

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
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

LossKind = Literal["ppd", "vpd", "kl", "reverse_kl"]
Decomposition = Literal["topk", "sampled"]
LOSS_KINDS: tuple[str, ...] = ("ppd", "vpd", "kl", "reverse_kl")
LN2 = math.log(2.0)


@lru_cache(maxsize=64)
def _prefix_index(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prefixes [P, k] long, rest [P, n] bool: items NOT in the prefix), in itertools order, cached per (n, k)."""
    prefixes = torch.tensor(list(itertools.permutations(range(n), k)), dtype=torch.long).reshape(-1, k)
    rest = torch.ones(prefixes.shape[0], n, dtype=torch.bool)
    rest.scatter_(1, prefixes, False)
    return prefixes, rest


def permutation_index(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All n! rankings of range(n) as a [n!, n] long tensor, in `itertools.permutations` order."""
    return _prefix_index(n, n)[0].to(device)


def _suffix_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """out[..., k] = logsumexp(x[..., k:]): the Plackett-Luce stage normalisers."""
    return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)


def ranking_log_prob(scores: torch.Tensor, rankings: torch.Tensor) -> torch.Tensor:
    """log P(ranking) for full rankings: scores [..., n], rankings [..., R, n] (or [R, n]) -> [..., R]."""
    if rankings.dim() == 2:
        ordered = scores[..., rankings]  # [..., R, n]
    else:
        ordered = torch.gather(scores.unsqueeze(-2).expand(*rankings.shape), -1, rankings)
    return (ordered - _suffix_logsumexp(ordered)).sum(-1)


def plackett_luce_log_probs(scores: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of all n! rankings: scores [..., n] -> [..., n!] (itertools.permutations order)."""
    return ranking_log_prob(scores, permutation_index(scores.shape[-1], scores.device))


def plackett_luce_prefix_log_probs(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Log-probabilities of the ordered top-k prefixes: [..., n] -> [..., n!/(n-k)!], in the order of
    `itertools.permutations(range(n), k)`. For k >= n-1 this equals `plackett_luce_log_probs`."""
    n = scores.shape[-1]
    if k >= n - 1:
        return plackett_luce_log_probs(scores)
    prefixes, rest = _prefix_index(n, k)
    prefixes, rest = prefixes.to(scores.device), rest.to(scores.device)
    head = scores[..., prefixes]  # [..., P, k]
    # Everything not yet placed after stage k acts as one bucket in the stage normalisers.
    tail = torch.logsumexp(scores.unsqueeze(-2).masked_fill(~rest, float("-inf")), dim=-1, keepdim=True)
    norms = _suffix_logsumexp(torch.cat([head, tail], dim=-1))[..., :k]
    return (head - norms).sum(-1)


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


def divergence_terms(
    kind: str, log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, log_q: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-example divergence [b] from ranking log-probs [b, R].

    With `log_q` None the R rankings are the whole (or the top-k marginal) support; otherwise they are
    samples from the proposal Q and the result is the importance-weighted mean of f(tau) / Q(tau).
    """
    lq = 0.0 if log_q is None else log_q
    if kind == "kl":
        terms = torch.exp(log_p_teacher - lq) * (log_p_teacher - log_p_student)
    elif kind == "reverse_kl":
        terms = torch.exp(log_p_student - lq) * (log_p_student - log_p_teacher)
    elif kind == "ppd":
        log_m = torch.logaddexp(log_p_teacher, log_p_student) - LN2
        terms = 0.5 * (
            torch.exp(log_p_teacher - lq) * (log_p_teacher - log_m)
            + torch.exp(log_p_student - lq) * (log_p_student - log_m)
        )
    else:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of 'ppd', 'kl', 'reverse_kl'")
    return terms.sum(-1) if log_q is None else terms.mean(-1)


def jensen_shannon(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JSD(P, Q) in nats over the last dim, from log-probabilities; symmetric, in [0, ln 2]."""
    return divergence_terms("ppd", log_p, log_q)


def reference_code_jsd(log_p_student: torch.Tensor, log_p_teacher: torch.Tensor) -> torch.Tensor:
    """The released code's batch-coupled "JSD" (see the module docstring): a scalar, mean over examples."""
    stacked = torch.cat([log_p_student, log_p_teacher], dim=0)  # [2b, R]
    log_m = torch.logsumexp(stacked, dim=0, keepdim=True) + math.log(0.5)  # [1, R]
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
        return (plackett_luce_prefix_log_probs(teacher_scores, k),
                plackett_luce_prefix_log_probs(student_scores, k), None)
    if support.num_samples < 2:
        raise ValueError("num_samples must be >= 2 (half from the teacher, half from the student)")
    from_teacher = support.num_samples // 2
    from_student = support.num_samples - from_teacher
    rankings = torch.cat([sample_rankings(teacher_scores, from_teacher, generator),
                          sample_rankings(student_scores, from_student, generator)], dim=-2)
    log_p_teacher = ranking_log_prob(teacher_scores, rankings)
    log_p_student = ranking_log_prob(student_scores, rankings)
    log_q = torch.logaddexp(log_p_teacher + math.log(from_teacher / support.num_samples),
                            log_p_student.detach() + math.log(from_student / support.num_samples))
    return log_p_teacher, log_p_student, log_q


def _check(student_scores: torch.Tensor, teacher_scores: torch.Tensor, kind: str, compat: bool) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown PAD loss kind {kind!r}; expected one of {', '.join(LOSS_KINDS)}")
    if compat and kind != "ppd":
        raise ValueError("reference_code_compat reproduces the released code's JSD; it needs kind='ppd'")
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(f"scores must both be [batch, n]; got {tuple(student_scores.shape)} and "
                         f"{tuple(teacher_scores.shape)}")


def pad_loss_and_jsd(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    kind: LossKind = "ppd",
    reference_code_compat: bool = False,
    support: RankingSupport | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-example JSD(P_T, P_S), no gradient) from ONE enumeration or sampling pass. The JSD
    runs over the same support as the loss: exact, top-k marginals, or the unbiased sampled estimate."""
    _check(student_scores, teacher_scores, kind, reference_code_compat)
    support = support or RankingSupport()
    teacher_scores = teacher_scores.detach()
    n = student_scores.shape[-1]
    if reference_code_compat and not support.is_exact(n):
        raise ValueError(f"reference_code_compat enumerates all n! rankings; n={n} > exact_max_n="
                         f"{support.exact_max_n}")
    log_pt, log_ps, log_q = ranking_distributions(student_scores, teacher_scores, support, generator)
    jsd = divergence_terms("ppd", log_pt, log_ps.detach(), log_q).detach()
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
    return pad_loss_and_jsd(student_scores, teacher_scores, kind, reference_code_compat, support, generator)[0]
