"""The `Scorer`: log-probabilities of responses given their prompt, exact and batched.

A group is (prompt_ids, [response_ids, ...]): one prompt with its n responses. Scoring them as n
independent sequences would encode the prompt n times. Instead a batch of groups is scored in two passes:
  1. the prompts are encoded once each (left-padded, only the last position's logits are kept: it predicts
     the first response token), and their KV cache is repeated over the responses of each group;
  2. the responses run on top of a copy of that cache selected for their rows, bucketed by length so
     little padding is computed (right-padded within a bucket); their logits predict response tokens 1.. .
The final response token is never fed (nothing after it is scored). Results equal scoring each
(prompt + response) on its own to float rounding (tests: within 1e-4 on tiny models and SmolLM2).
`forward_tokens` counts the tokens actually run through the model (no padding), for accounting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from harness.models.base import LoadedModel
from harness.models.kv import (
    encode_shared_prefix,
    forward_with_cache,
    length_buckets,
    pad_tolerance,
    select_cache,
    shared_prefix_length,
)

Group = tuple[list[int], list[list[int]]]


@dataclass(frozen=True)
class SeqScore:
    sum_logprob: float
    mean_logprob: float
    n_tokens: int


class Scorer:
    def __init__(self, loaded: LoadedModel, batch_size: int = 8, remember_prompts: int = 0) -> None:
        self.loaded = loaded
        self.batch_size = batch_size  # response sequences per forward pass (a group is never split)
        self.forward_tokens = 0
        # A scorer that reads new responses to the SAME prompts again and again (the teacher reading every
        # row's answers to the held-out prompts) keeps the prompt pass of its last `remember_prompts` chunks:
        # a chunk's prompts are encoded once per run instead of once per call. The cache is never mutated
        # (each bucket runs on a copy, `select_cache`), so remembered passes give identical scores.
        self.remember_prompts = remember_prompts
        self._prompt_passes: dict[tuple[tuple[int, ...], ...], tuple[torch.Tensor, Any, torch.Tensor]] = {}

    @property
    def pad_id(self) -> int:
        return self.loaded.formatter.pad_id

    # ------------------------------------------------------------------ public API

    def score_groups(self, groups: list[Group], progress: str | None = None) -> list[list[SeqScore]]:
        """Sum / mean log-prob of each response's tokens given its prompt; [groups][responses]."""
        flat: list[SeqScore | None] = [None] * sum(len(rs) for _, rs in groups)
        for rows, logits, targets, lengths in self._iter_buckets(groups, progress):
            # log_softmax, not logits - logsumexp: the latter's fp32 reduction differs by ~2e-5 per token from
            # log_softmax, which the training losses (methods.common) use; scores must match those exactly.
            token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            mask = torch.arange(token_lp.shape[1], device=token_lp.device)[None, :] < lengths[:, None]
            sums = (token_lp * mask).sum(-1).double().tolist()
            for row, total, n in zip(rows, sums, lengths.tolist(), strict=True):
                flat[row] = SeqScore(total, total / n if n else 0.0, int(n))
        return _regroup(flat, groups)

    def topk_groups(
        self, groups: list[Group], k: int, progress: str | None = None
    ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Top-k next-token log-probs at each response position: per group, per response,
        (ids LongTensor[T, k], logprobs FloatTensor[T, k]) where row t predicts response token t."""
        flat: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * sum(len(rs) for _, rs in groups)
        for rows, logits, _targets, lengths in self._iter_buckets(groups, progress):
            values, ids = torch.log_softmax(logits, dim=-1).topk(min(k, logits.shape[-1]), dim=-1)
            for i, (row, n) in enumerate(zip(rows, lengths.tolist(), strict=True)):
                flat[row] = (ids[i, :n].cpu(), values[i, :n].float().cpu())
        return _regroup(flat, groups)

    def shared_next_token_logprobs(
        self, prompt_sets: list[list[list[int]]], candidates: list[int], progress: str | None = None,
        within_top: int | None = None,
    ) -> list[torch.Tensor]:
        """Log-probs [len(set), len(candidates)] of candidate next tokens after each prompt of each set,
        where the prompts of a set share a long token prefix (the MCQ judge's context + question): the
        longest common prefix is encoded once per set and only the differing suffixes run per prompt.
        Token sequences are exactly the given ones, so results equal `next_token_logprobs`.
        `within_top=k`: a candidate outside the k most likely tokens gets -inf (what an API that returns
        only the top-k log-probs shows)."""
        groups: list[Group] = []
        for prompts in prompt_sets:
            common = shared_prefix_length(prompts)  # every suffix keeps >= 1 token
            # A dummy final token makes the scorer compute the distribution right after each full prompt.
            groups.append((prompts[0][:common] if prompts else [], [p[common:] + [candidates[0]] for p in prompts]))
        flat: list[torch.Tensor | None] = [None] * sum(len(rs) for _, rs in groups)
        for rows, logits, _targets, lengths in self._iter_buckets(groups, progress):
            last = logits[torch.arange(len(rows)), lengths - 1]  # predicts the dummy = the next token
            logp = torch.log_softmax(last, dim=-1)
            picked = logp[:, candidates]
            if within_top is not None:
                kth = logp.topk(min(within_top, logp.shape[-1]), dim=-1).values[:, -1:]
                picked = picked.masked_fill(picked < kth, float("-inf"))
            picked = picked.cpu()
            for i, row in enumerate(rows):
                flat[row] = picked[i]
        return [torch.stack(list(r)) if r else torch.zeros((0, len(candidates))) for r in _regroup(flat, groups)]

    @torch.no_grad()
    def next_token_logprobs(self, prompts: list[list[int]], candidates: list[int]) -> torch.Tensor:
        """Log-probs [P, len(candidates)] of candidate next tokens after each prompt (full softmax)."""
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            logits, _, _ = self._encode_prompts(chunk)
            logp = torch.log_softmax(logits.float(), dim=-1)
            out.append(logp[:, candidates].cpu())
        return torch.cat(out) if out else torch.zeros((0, len(candidates)))

    # ------------------------------------------------------------------ internals

    def _encode_prompts(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Left-padded prompt pass: (last-position logits [G, V], KV cache, attention mask [G, L])."""
        if not self.remember_prompts:
            return self._prompt_pass(prompts)
        key = tuple(tuple(p) for p in prompts)
        if key not in self._prompt_passes:
            while len(self._prompt_passes) >= self.remember_prompts:
                del self._prompt_passes[next(iter(self._prompt_passes))]  # the oldest
            self._prompt_passes[key] = self._prompt_pass(prompts)
        return self._prompt_passes[key]

    def forget_prompts(self) -> None:
        """Drop the remembered prompt passes (their KV caches live on the model's device)."""
        self._prompt_passes.clear()

    def _prompt_pass(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        # A shared prefix (e.g. the teacher's system prompt and demonstrations) is encoded once per chunk.
        logits, cache, attn, _, run = encode_shared_prefix(self.loaded.model, prompts, self.pad_id, self.loaded.device)
        self.forward_tokens += run
        return logits, cache, attn

    def _buckets(self, lengths: list[int]) -> list[list[int]]:
        """Responses (by index) grouped by similar length (kv.length_buckets)."""
        return length_buckets(lengths, pad_tolerance(self.loaded.device))

    @torch.no_grad()
    def _iter_buckets(
        self, groups: list[Group], progress: str | None
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per bucket of responses: (flat response indices, logits [b, T, V] (fp32) predicting each response
        token, targets [b, T], lengths [b]). Prompts of a chunk are encoded once; every bucket of that
        chunk's responses runs on a copy of the prompt cache selected for its rows."""
        bar = None
        if progress:
            from harness.console import bar as progress_bar  # off under `run --quiet`

            bar = progress_bar(total=len(groups), desc=progress, unit="prompt")
        offsets = [0]
        for _, responses in groups:
            offsets.append(offsets[-1] + len(responses))
        for chunk in group_chunks(groups, self.batch_size):
            items = [(c, g, r) for c, g in enumerate(chunk) for r in groups[g][1]]  # (chunk slot, group, ids)
            rows = [offsets[g] + j for g in chunk for j in range(len(groups[g][1]))]
            if items:
                first_logits, cache, prompt_attn = self._encode_prompts([groups[g][0] for g in chunk])
                prompt_len = prompt_attn.sum(-1)
                for bucket in self._buckets([len(r) for _, _, r in items]):
                    yield self._run_bucket(bucket, items, rows, first_logits, cache, prompt_attn, prompt_len)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()

    def _run_bucket(
        self, bucket: list[int], items: list[tuple[int, int, list[int]]], rows: list[int], first_logits: torch.Tensor,
        cache: Any, prompt_attn: torch.Tensor, prompt_len: torch.Tensor,
    ) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.loaded.device
        responses = [items[i][2] for i in bucket]
        slots = torch.tensor([items[i][0] for i in bucket], device=device)
        lengths = torch.tensor([len(r) for r in responses], device=device)
        width = max([len(r) for r in responses] + [1])
        targets = torch.full((len(responses), width), self.pad_id, dtype=torch.long, device=device)
        for i, r in enumerate(responses):
            if r:
                targets[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        logits = first_logits.index_select(0, slots).float().unsqueeze(1)  # predicts response token 0
        if width > 1:
            # The last response token is never fed: nothing after it is scored.
            fed_attn = (torch.arange(width - 1, device=device)[None, :] < (lengths[:, None] - 1)).long()
            attn = torch.cat([prompt_attn.index_select(0, slots), fed_attn], dim=1)
            positions = prompt_len.index_select(0, slots)[:, None] + torch.arange(width - 1, device=device)[None, :]
            rest, _ = forward_with_cache(
                self.loaded.model, select_cache(cache, slots), input_ids=targets[:, :-1], attention_mask=attn,
                position_ids=positions,
            )
            logits = torch.cat([logits, rest.float()], dim=1)
            self.forward_tokens += int((lengths - 1).clamp(min=0).sum())
        return [rows[i] for i in bucket], logits, targets, lengths


def _regroup(flat: list[Any], groups: list[Group]) -> list[list[Any]]:
    out, pos = [], 0
    for _, responses in groups:
        out.append(flat[pos : pos + len(responses)])
        pos += len(responses)
    return out


def group_chunks(groups: list[Group], batch_size: int) -> Iterator[list[int]]:
    """Indices of consecutive groups holding at most `batch_size` responses (a group is never split)."""
    chunk: list[int] = []
    rows = 0
    for g, (_, responses) in enumerate(groups):
        if chunk and rows + len(responses) > batch_size:
            yield chunk
            chunk, rows = [], 0
        chunk.append(g)
        rows += len(responses)
    if chunk:
        yield chunk
