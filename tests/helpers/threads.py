"""Thread counts pinned where bytes are compared: float sums split across threads round differently, so a
run at the machine's default thread count is not bitwise the run of a launch (torchrun and these tests set
OMP_NUM_THREADS=1 per process). harness.runtime_facts records the count in every manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

LAUNCH_THREADS = 1  # OMP_NUM_THREADS of every launched process in the tests


@contextmanager
def pinned_threads(count: int = LAUNCH_THREADS) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recorded_threads(run_dir: Path) -> set[int]:
    """Every thread count the run directory's manifests record (one per process fact)."""
    counts: set[int] = set()
    for path in (run_dir / "artifacts").glob("*/*/manifest.json"):
        runtime = json.loads(path.read_text()).get("runtime")
        for facts in runtime if isinstance(runtime, list) else [runtime]:
            counts.add(facts["threads"])
    return counts
