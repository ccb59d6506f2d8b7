"""The `Scorer`: log-probabilities of responses given their prompt, exact and batched.

A group is (prompt_ids, [response_ids, ...]): one prompt with its n responses. Scoring them as n
independent sequences would encode the prompt n times. Instead a batch of groups is scored in two passes:
  1. the prompts are encoded once each (left-padded, only the last position's logits are kept: it predicts
     the first response token), and their KV cache is repeated over the responses of each group;
  2. the responses (right-padded) run on top of that cache; their logits predict response tokens 1.. .
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
from harness.models.kv import forward_with_cache, new_cache

Group = tuple[list[int], list[list[int]]]


@dataclass(frozen=True)
class SeqScore:
    sum_logprob: float
    mean_logprob: float
    n_tokens: int


class Scorer:
    def __init__(self, loaded: LoadedModel, batch_size: int = 8) -> None:
        self.loaded = loaded
        self.batch_size = batch_size  # response sequences per forward pass (a group is never split)
        self.forward_tokens = 0

    @property
    def pad_id(self) -> int:
        pad = self.loaded.tokenizer.pad_token_id
        return self.loaded.formatter.end_of_turn_id if pad is None else int(pad)

    # ------------------------------------------------------------------ public API

    def score_groups(self, groups: list[Group], progress: str | None = None) -> list[list[SeqScore]]:
        """Sum / mean log-prob of each response's tokens given its prompt; [groups][responses]."""
        results: list[list[SeqScore]] = []
        for logp, targets, lengths in self._iter_chunks(groups, progress):
            token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [R, T]
            mask = torch.arange(token_lp.shape[1], device=token_lp.device)[None, :] < lengths[:, None]
            sums = (token_lp * mask).sum(-1).double().tolist()
            for row_lengths, row_sums in _split_rows(lengths.tolist(), sums, self._last_sizes):
                results.append(
                    [SeqScore(s, s / n if n else 0.0, int(n)) for s, n in zip(row_sums, row_lengths, strict=True)]
                )
        return results

    def topk_groups(
        self, groups: list[Group], k: int, progress: str | None = None
    ) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Top-k next-token log-probs at each response position: per group, per response,
        (ids LongTensor[T, k], logprobs FloatTensor[T, k]) where row t predicts response token t."""
        results: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for logp, _targets, lengths in self._iter_chunks(groups, progress):
            values, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
            rows = [(ids[r, :n].cpu(), values[r, :n].float().cpu()) for r, n in enumerate(lengths.tolist())]
            pos = 0
            for size in self._last_sizes:
                results.append(rows[pos : pos + size])
                pos += size
        return results

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
        device = self.loaded.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attn[i, width - len(p) :] = 1
        ids, attn = ids.to(device), attn.to(device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        logits, cache = forward_with_cache(
            self.loaded.model, new_cache(), input_ids=ids, attention_mask=attn, position_ids=positions,
            logits_to_keep=1,
        )
        self.forward_tokens += sum(len(p) for p in prompts)
        return logits[:, -1], cache, attn

    def _chunks(self, groups: list[Group]) -> Iterator[list[Group]]:
        chunk: list[Group] = []
        rows = 0
        for group in groups:
            if chunk and rows + len(group[1]) > self.batch_size:
                yield chunk
                chunk, rows = [], 0
            chunk.append(group)
            rows += len(group[1])
        if chunk:
            yield chunk

    @torch.no_grad()
    def _iter_chunks(
        self, groups: list[Group], progress: str | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per chunk of groups: (log-probs [R, T, V] predicting each response token, targets [R, T],
        lengths [R]); `self._last_sizes` holds the number of responses of each group in the chunk."""
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(groups), desc=progress, unit="prompt")
        device = self.loaded.device
        for chunk in self._chunks(groups):
            self._last_sizes = [len(responses) for _, responses in chunk]
            responses = [r for _, rs in chunk for r in rs]
            lengths = torch.tensor([len(r) for r in responses], device=device)
            width = max([len(r) for r in responses] + [1])
            targets = torch.full((len(responses), width), self.pad_id, dtype=torch.long, device=device)
            for i, r in enumerate(responses):
                if r:
                    targets[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            if not responses:
                if bar is not None:
                    bar.update(len(chunk))
                yield torch.zeros((0, 1, 1)), targets, lengths
                continue
            first_logits, cache, prompt_attn = self._encode_prompts([p for p, _ in chunk])
            expand = torch.tensor([g for g, size in enumerate(self._last_sizes) for _ in range(size)], device=device)
            cache.reorder_cache(expand)
            logits = first_logits.index_select(0, expand).unsqueeze(1)  # predicts response token 0
            if width > 1:
                fed = targets[:, :-1]
                fed_attn = (torch.arange(width - 1, device=device)[None, :] < (lengths[:, None] - 1)).long()
                attn = torch.cat([prompt_attn.index_select(0, expand), fed_attn], dim=1)
                prompt_len = prompt_attn.sum(-1).index_select(0, expand)
                positions = prompt_len[:, None] + torch.arange(width - 1, device=device)[None, :]
                rest, _ = forward_with_cache(
                    self.loaded.model, cache, input_ids=fed, attention_mask=attn, position_ids=positions
                )
                logits = torch.cat([logits, rest], dim=1)
                self.forward_tokens += int((lengths - 1).clamp(min=0).sum())
            if bar is not None:
                bar.update(len(chunk))
            yield torch.log_softmax(logits.float(), dim=-1), targets, lengths
        if bar is not None:
            bar.close()


def _split_rows(lengths: list[int], sums: list[float], sizes: list[int]) -> Iterator[tuple[list[int], list[float]]]:
    pos = 0
    for size in sizes:
        yield lengths[pos : pos + size], sums[pos : pos + size]
        pos += size
