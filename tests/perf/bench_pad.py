"""PAD loss + backward per call, batch 64: n = 4 and 8 exact (all n! rankings), n = 16 decomposed.

Run: .venv/bin/python tests/perf/bench_pad.py [--repeats 10] [--batch 64] [--threads N]
Scores are random fp32 [batch, n] (beta already applied); timing excludes the model forward, which is the
same for every method: this measures what PAD adds on top of scoring n responses.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.methods.pad_loss import RankingSupport, choose_topk, pad_loss


def time_call(n: int, kind: str, support: RankingSupport, batch: int, repeats: int) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(batch, n, generator=gen) * 3
    student = (torch.randn(batch, n, generator=gen) * 3).requires_grad_()
    times = []
    for i in range(repeats + 2):  # two warm-up calls (permutation index cache, allocator)
        start = time.perf_counter()
        loss = pad_loss(student, teacher, kind, support=support, generator=gen)
        loss.backward()
        elapsed = time.perf_counter() - start
        student.grad = None
        if i >= 2:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [
        (4, "ppd", RankingSupport(), "exact, 24 rankings"),
        (8, "ppd", RankingSupport(), "exact, 40320 rankings"),
        (8, "kl", RankingSupport(), "exact, 40320 rankings"),
        (16, "ppd", RankingSupport(), f"top-{choose_topk(16, 4096)} stages, 3360 prefixes"),
        (16, "ppd", RankingSupport(decomposition="sampled", num_samples=256), "sampled, 256 rankings"),
        (16, "vpd", RankingSupport(), "O(n), no enumeration"),
    ]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"{args.repeats} timed calls each (after 2 warm-up)"
    )
    print(f"{'n':>3} {'kind':>10}  {'median ms':>10} {'min ms':>8}  support")
    for n, kind, support, label in cases:
        times = time_call(n, kind, support, args.batch, args.repeats)
        print(f"{n:>3} {kind:>10}  {1e3 * statistics.median(times):>10.2f} {1e3 * min(times):>8.2f}  {label}")


if __name__ == "__main__":
    main()
