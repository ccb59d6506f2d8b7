"""Decoding a row's answers to several benchmarks: one benchmark at a time vs together (row_answers).

Run: .venv/bin/python tests/perf/bench_row_answers.py [--model smollm2-135m-instruct] [--repeats 2]
Requests shaped like the offline default's greedy answers (leaderboards/smol.yaml): 32 prompts x 32 tokens,
3 x 32, 1 x 32, 4 x 48, 2 x 64, on random token prompts of 30-300 tokens. Also prints the cost of one decode
step by batch size, the reason it pays: on CPUs a step is bound by reading the weights, not by the batch.
Reports the ratio measured side by side in this run, never an absolute claim.
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.config import ModelSpec
from harness.models.base import GenerationRequest, SamplingParams
from harness.models.hf_generator import HFGenerator
from harness.models.sources import load_model
from harness.stages.row_answers import PrefetchedGenerator

SHAPE = [(32, 32, 40), (3, 32, 80), (1, 32, 120), (4, 48, 90), (2, 64, 300)]  # (items, max_new_tokens, prompt)


def requests() -> list[list[GenerationRequest]]:
    gen = torch.Generator().manual_seed(0)
    per_bench = []
    for items, limit, prompt in SHAPE:
        per_bench.append([GenerationRequest(torch.randint(100, 30000, (prompt + 5 * i,), generator=gen).tolist(),
                                            seed=0, max_new_tokens=limit) for i in range(items)])
    return per_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model(ModelSpec(model=args.model))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=1)
    per_bench = requests()
    alone, together = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        start = time.perf_counter()
        for reqs in per_bench:
            HFGenerator(loaded, batch_size=args.batch).generate(reqs, greedy)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        PrefetchedGenerator(HFGenerator(loaded, batch_size=args.batch)).prefetch([r for reqs in per_bench for r in reqs])
        together.append(time.perf_counter() - start)
    a, t = min(alone), min(together)
    print(f"{args.model}, batch {args.batch}: one benchmark at a time {a:.1f} s, together {t:.1f} s, "
          f"ratio {a / t:.2f}x")
    for b in (1, 4, 16, 32, 64):
        def run(limit: int, b: int = b) -> float:
            reqs = [GenerationRequest(list(range(100 + i, 140 + i)), seed=0, max_new_tokens=limit) for i in range(b)]
            start = time.perf_counter()
            HFGenerator(loaded, batch_size=b).generate(reqs, greedy)
            return time.perf_counter() - start

        step = (run(17) - run(1)) / 16  # decode steps only (the prefill cancels); a row may end early
        print(f"  batch {b:3d}: {1000 * step:.0f} ms per decode step, {b / step:.0f} tokens/s")

if __name__ == "__main__":
    main()
