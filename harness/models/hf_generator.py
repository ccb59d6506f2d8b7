"""The `hf` generation backend: batched sampling with transformers models, on CPU or GPU.

The decoding loop is our own (not `model.generate`) for one reason: reproducibility per request. Every
sample row owns a `torch.Generator` seeded from (request seed, sample index) and draws exactly one uniform
number per step, so a request's samples do not depend on which other requests share its batch, on the
batch size or on the order of requests. Rows of a batch are left-padded with explicit position ids, and
the prompt of a request with n samples is encoded once and its KV cache repeated over the n rows.
(Padding changes float rounding by ~1e-7, so in principle a draw that lands exactly on a probability
boundary could flip; the tests check batch independence on real batches.)

`generate_with_top_logprobs` is the same loop that also keeps, for every generated token, the top-k
log-probs of the model's own next-token distribution at that step (the `local` judge's OpenAI-style
`top_logprobs`); `generate` computes none of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.models.base import GenerationOutput, GenerationRequest, Generator, LoadedModel, SamplingParams
from harness.models.kv import encode_in_length_buckets, forward_with_cache


def row_seed(request_seed: int, sample_index: int) -> int:
    """Seed of one sample row: stable across runs and platforms (no Python `hash`)."""
    digest = hashlib.sha256(f"{request_seed}:{sample_index}".encode()).hexdigest()
    return int(digest[:15], 16)


def row_generators(reqs: list[GenerationRequest], sample_idx: list[int]) -> list[torch.Generator]:
    """One CPU generator per sample row, seeded from (request seed, sample index)."""
    generators = []
    for req, j in zip(reqs, sample_idx, strict=True):
        g = torch.Generator(device="cpu")
        g.manual_seed(row_seed(req.seed, j))
        generators.append(g)
    return generators


def choose_tokens(
    logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator] | None
) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else top-p sampling by inverse CDF with one uniform
    draw from each row's own generator."""
    if params.temperature == 0 or generators is None:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    sorted_p, sorted_idx = probs.sort(dim=-1, descending=True, stable=True)
    if params.top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        keep = (sorted_p.cumsum(-1) - sorted_p) < params.top_p
        sorted_p = sorted_p * keep
    cum = sorted_p.cumsum(-1)
    draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]).to(cum.device)
    target = (draws * cum[:, -1].double()).to(cum.dtype).unsqueeze(-1)
    pos = torch.searchsorted(cum, target, right=True).clamp(max=cum.shape[-1] - 1)
    return sorted_idx.gather(-1, pos).squeeze(-1)


TopK = list[tuple[int, float]]  # (token id, log-prob), best first


@dataclass
class TopLogprobsOutput(GenerationOutput):
    """A `GenerationOutput` with, per sample and per token of its `token_ids` (so the end-of-turn token is not
    listed), the top-k alternatives of the model's next-token distribution at that step: log-softmax of
    the raw logits (temperature 1, whatever the sampling temperature), as (token id, log-prob) best first."""

    top_logprobs: list[list[TopK]] = field(default_factory=list)


@dataclass
class _Row:
    """One sample row's result: its tokens (end-of-turn stripped), whether it ended its turn, and its
    per-token top-k (None unless asked)."""

    token_ids: list[int]
    finished: bool
    top: list[TopK] | None = None


def top_k_logprobs(logits: torch.Tensor, k: int) -> TopK:
    """The k most likely next tokens of ONE row's logits [V], with their log-probs, best first."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]))
    return list(zip(ids.tolist(), values.tolist(), strict=True))


class HFGenerator(Generator):
    """transformers' generation loop on the model in memory (CPU or GPU), batched, seeded per request."""

    name = "hf"

    def __init__(self, loaded: LoadedModel, batch_size: int = 16) -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self.generated_tokens = 0  # sampled tokens, end-of-turn included (generation accounting)
        self.prompt_tokens = 0  # prompt tokens encoded (forward accounting)

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, **self.loaded.identity}

    def generate(
        self, requests: list[GenerationRequest], params: SamplingParams, progress: str | None = None
    ) -> list[GenerationOutput]:
        return [GenerationOutput(token_ids=ids, texts=texts, finished=done)
                for ids, texts, done, _ in self._run(requests, params, progress, None)]

    def generate_with_top_logprobs(
        self, requests: list[GenerationRequest], params: SamplingParams, k: int, progress: str | None = None
    ) -> list[TopLogprobsOutput]:
        """`generate`, each output also holding the top-`k` log-probs of every generated token's step
        (`TopLogprobsOutput`); the tokens drawn are the same as `generate`'s."""
        return [TopLogprobsOutput(token_ids=ids, texts=texts, finished=done, top_logprobs=top)
                for ids, texts, done, top in self._run(requests, params, progress, max(1, k))]

    def _run(
        self, requests: list[GenerationRequest], params: SamplingParams, progress: str | None, top_k: int | None
    ) -> list[tuple[list[list[int]], list[str], list[bool], list[list[TopK]]]]:
        """Per request: its samples' token ids, texts, finished flags and (when `top_k`) top-k per token."""
        rows = [(r, j) for r, req in enumerate(requests) for j in range(req.n)]
        # Longest prompts first so a batch holds similar lengths (less padding); output does not depend on it.
        rows.sort(key=lambda rj: -len(requests[rj[0]].prompt_ids))
        results: dict[tuple[int, int], _Row] = {}
        bar = None
        if progress:
            from harness.console import bar as progress_bar  # off under `run --quiet`

            bar = progress_bar(total=len(rows), desc=progress, unit="sample")
        was_training = bool(getattr(self.loaded.model, "training", False))
        self.loaded.model.eval()  # on-policy methods sample from the live student: no dropout while sampling
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            outs = self._generate_batch([requests[r] for r, _ in chunk], [j for _, j in chunk], params, top_k)
            for key, out in zip(chunk, outs, strict=True):
                results[key] = out
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        if was_training:
            self.loaded.model.train()
        outputs = []
        for r, req in enumerate(requests):
            samples = [results[(r, j)] for j in range(req.n)]
            outputs.append((
                [s.token_ids for s in samples],
                [self.loaded.formatter.decode(s.token_ids) for s in samples],
                [s.finished for s in samples],
                [s.top for s in samples if s.top is not None],
            ))
        return outputs

    def _prefill(self, reqs: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Encode the batch's prompts: per row, the logits of its first token, and the KV cache, attention mask
        and last position it decodes from. Each distinct prompt is encoded once; the n sample rows of a
        request share its KV cache."""
        model, device, pad_id = self.loaded.model, self.loaded.device, self.loaded.formatter.pad_id
        unique: dict[int, int] = {}
        for req in reqs:
            unique.setdefault(id(req), len(unique))
        prompts = list({id(req): req.prompt_ids for req in reqs}.values())
        # prompts of several benchmarks may share the batch: encoded in buckets of similar length
        logits, cache, attn, positions = encode_in_length_buckets(model, prompts, pad_id, device)
        self.prompt_tokens += sum(len(p) for p in prompts)
        expand = torch.tensor([unique[id(req)] for req in reqs], device=device)
        cache.reorder_cache(expand)
        return (logits.index_select(0, expand), cache, attn.index_select(0, expand),
                positions[:, -1].index_select(0, expand))

    @torch.no_grad()
    def _generate_batch(
        self, reqs: list[GenerationRequest], sample_idx: list[int], params: SamplingParams, top_k: int | None = None
    ) -> list[_Row]:
        model, device = self.loaded.model, self.loaded.device
        stop_ids = self.loaded.formatter.stop_ids  # end-of-turn + every generation-config eos id
        pad_id = self.loaded.formatter.pad_id
        logits, cache, attn, last_pos = self._prefill(reqs)

        generators = row_generators(reqs, sample_idx) if params.temperature > 0 else None
        limits = [req.limit(params) for req in reqs]
        tokens: list[list[int]] = [[] for _ in reqs]
        tops: list[list[TopK]] = [[] for _ in reqs]  # per row, the top-k of each token's step (when asked)
        rows = list(range(len(reqs)))  # the request row at each batch position
        ended: set[int] = set()  # rows that ended their turn or reached their limit
        for _ in range(max(limits)):
            nxt = choose_tokens(logits, params, generators)
            for k, i in enumerate(rows):
                if i not in ended:
                    tokens[i].append(int(nxt[k]))
                    if top_k is not None:
                        tops[i].append(top_k_logprobs(logits[k], top_k))
                    if tokens[i][-1] in stop_ids or len(tokens[i]) >= limits[i]:
                        ended.add(i)
            if len(ended) == len(reqs):
                break
            over = [i in ended for i in rows]
            if sum(over) * 4 >= len(rows):
                # A quarter of the batch has ended: drop those rows (answers of several lengths share batches;
                # an ended row would otherwise be computed for nothing until the longest one ends).
                keep = torch.tensor([k for k, o in enumerate(over) if not o], device=device)
                cache.reorder_cache(keep)
                nxt, attn, last_pos = nxt.index_select(0, keep), attn.index_select(0, keep), last_pos.index_select(0, keep)
                if generators is not None:
                    generators = [generators[k] for k in keep.tolist()]
                rows = [i for i, o in zip(rows, over, strict=True) if not o]
            else:  # too few to be worth copying the cache: they decode masked padding meanwhile
                nxt = torch.where(torch.tensor(over, device=device), torch.full_like(nxt, pad_id), nxt)
            attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=attn.dtype, device=device)], dim=1)
            last_pos = last_pos + 1
            logits, cache = forward_with_cache(
                model, cache, input_ids=nxt.unsqueeze(-1), attention_mask=attn, position_ids=last_pos.unsqueeze(-1)
            )
            logits = logits[:, -1]
        results = []
        for seq, top in zip(tokens, tops, strict=True):
            self.generated_tokens += len(seq)
            done = bool(seq) and seq[-1] in stop_ids
            results.append(_Row(seq[:-1] if done else seq, done,
                                None if top_k is None else (top[:-1] if done else top)))
        return results
