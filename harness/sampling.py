"""The sampling stage.

For each prompt: draw `cfg.candidates` responses at high temperature (default 1.0, top_p 0.95), keep
`cfg.n` of them chosen for diversity by greedy max-min edit distance over characters, and drop the prompt
when the kept responses are not all distinct (a ranking over identical responses teaches nothing). Each
prompt's seed is derived from (cfg.seed, prompt_id) only, so a prompt's samples do not change when other
prompts are added, removed or reordered.

The released PAD pipeline (EganGu/PAD `data_gen/gen/agg.py`) draws 5 samples and keeps 4 by the same
greedy max-min character edit distance, starting from the first sample (`first_pick: first`, what the
paper configs use); this project's default starts from the sample farthest from all others
(`first_pick: farthest`). Every response carries `finished`: False when it was cut at max_new_tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from harness.config import SamplingConfig
from harness.models.base import GenerationRequest, Generator, SamplingParams
from harness.models.chat import ChatFormatter


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance over characters (insert, delete, substitute all cost 1).

    Bit-parallel (Myers 1999 / Hyyro 2003) with Python integers as bit vectors: one pass over `b` with a
    handful of big-int operations per character, ~50x faster than the textbook DP in pure Python, which
    matters at 15 pairs of ~300-character responses per prompt.
    """
    if not a:
        return len(b)
    full = (1 << len(a)) - 1
    last = 1 << (len(a) - 1)
    peq: dict[str, int] = {}
    for i, ch in enumerate(a):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    pv, mv, score = full, 0, len(a)
    for ch in b:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = (ph << 1) | 1  # | 1: row 0 of the DP grows by one per character (global distance)
        mh = mh << 1
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv & full
    return score


def select_diverse(responses: list[str], n: int, first_pick: str = "farthest") -> list[int]:
    """Indices of `n` responses chosen by greedy max-min edit distance, in selection order.

    Start rule: `farthest` picks first the response with the largest total edit distance to all others
    (the most "central outlier"; ties to the lowest index); `first` picks response 0, as the released
    agg.py does. Then repeatedly add the candidate whose minimum distance to the already chosen ones is
    largest. Ties: under `farthest`, to the larger total distance to the chosen ones, then to the lowest
    index; under `first`, to the lowest index (agg.py's strict `>` over ascending indices).
    With n >= len(responses) every index is returned. Greedy is an approximation of the max-min subset
    (it can miss the optimum when an early pick is a near-duplicate of a later one); it is O(n * m) after
    the O(m^2) distances.
    """
    m = len(responses)
    if n >= m:
        return list(range(m))
    if n <= 0:
        return []
    dist = [[0] * m for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            dist[i][j] = dist[j][i] = edit_distance(responses[i], responses[j])
    released = first_pick == "first"
    chosen = [0] if released else [max(range(m), key=lambda i: (sum(dist[i]), -i))]
    while len(chosen) < n:
        rest = [i for i in range(m) if i not in chosen]
        best = max(
            rest,
            key=lambda i: (min(dist[i][c] for c in chosen), 0 if released else sum(dist[i][c] for c in chosen), -i),
        )
        chosen.append(best)
    return chosen


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}".encode()).hexdigest()
    return int(digest[:15], 16)


@dataclass
class SamplingResult:
    records: list[dict[str, Any]]  # {"prompt_id", "messages", "responses", "finished", "response_token_counts"}
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def dropped(self) -> list[str]:
        """Prompt ids dropped because their kept responses were not all distinct."""
        return list(self.stats.get("dropped_prompt_ids", []))

    @property
    def generated_tokens(self) -> int:
        return int(self.stats.get("generated_tokens", 0))


def sample_prompts(
    generator: Generator,
    formatter: ChatFormatter,
    prompts: list[dict[str, Any]],
    cfg: SamplingConfig,
    progress: bool = True,
    max_prompt_length: int | None = None,
) -> SamplingResult:
    """Sample, select for diversity and filter. `prompts` are {"prompt_id", "messages"} dicts; the
    formatter is the SAMPLER's (the student's by default, the teacher's with its context if asked)."""
    requests = [
        GenerationRequest(
            prompt_ids=formatter.prompt_ids(p["messages"], max_length=max_prompt_length),
            seed=prompt_seed(cfg.seed, str(p["prompt_id"])),
            n=cfg.candidates,
        )
        for p in prompts
    ]
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    tokens_before = int(generator.generated_tokens)
    outputs = generator.generate(requests, params, progress="sampling" if progress else None)
    records, dropped = [], []
    candidate_tokens = unfinished_candidates = unfinished_kept = 0
    for prompt, out in zip(prompts, outputs, strict=True):
        finished = list(out.finished) if out.finished else [False] * len(out.texts)
        # Finished samples count their end-of-turn token: it was generated too.
        counts = [len(ids) + int(done) for ids, done in zip(out.token_ids, finished, strict=True)]
        candidate_tokens += sum(counts)
        unfinished_candidates += finished.count(False)
        pool = [i for i in range(len(out.texts)) if finished[i] or not cfg.drop_unfinished]
        keep = [pool[i] for i in select_diverse([out.texts[i] for i in pool], cfg.n, cfg.first_pick)]
        responses = [out.texts[i] for i in keep]
        if len(responses) < cfg.n or len(set(responses)) < len(responses):
            dropped.append(prompt["prompt_id"])
            continue
        unfinished_kept += sum(not finished[i] for i in keep)
        records.append({
            "prompt_id": prompt["prompt_id"],
            "messages": prompt["messages"],
            "responses": responses,
            "finished": [finished[i] for i in keep],
            "response_token_counts": [counts[i] for i in keep],
        })
    generated = int(generator.generated_tokens) - tokens_before
    stats = {
        "prompts_in": len(prompts),
        "prompts_kept": len(records),
        "dropped_prompt_ids": dropped,
        "candidates_per_prompt": cfg.candidates,
        "kept_per_prompt": cfg.n,
        # Cut at max_new_tokens (no end-of-turn): among all candidates, and among the kept responses.
        "unfinished_candidates": unfinished_candidates,
        "candidates_total": sum(len(out.texts) for out in outputs),
        "unfinished_responses": unfinished_kept,
        "responses_kept": len(records) * cfg.n,
        # Backends that count exactly report their own number; otherwise the samples' lengths are summed.
        "generated_tokens": generated if generated > 0 else candidate_tokens,
        "sampler_identity": generator.identity,
    }
    return SamplingResult(records=records, stats=stats)
