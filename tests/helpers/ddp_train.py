"""Train the tiny pairwise test method under whatever launch started this script (one process, or
`torchrun --nproc_per_node 2` with ACCELERATE_USE_CPU=1: data-parallel over gloo), writing the trained
model, metrics and accounting under OUT. Used by tests/test_multiprocess.py.

    python tests/helpers/ddp_train.py OUT [STOP_AFTER_STEPS]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest, helpers

from conftest import make_tiny  # noqa: E402

from harness.training import train  # noqa: E402
from helpers.training import MarginMethod, budget, make_groups  # noqa: E402

# 12 prompts, 4 per optimizer step: one process accumulates 4 micro-batches of 1, two processes 2 each.
BUDGET = budget(max_steps=3, effective_batch=4, micro_batch=1, warmup_ratio=0.0, checkpoint_every=1)


def run(out: Path, stop_after_steps: int | None = None) -> Any:
    torch.set_num_threads(1)
    return train(MarginMethod(), make_groups(12), make_tiny("llama", seed=0), BUDGET, 7, out / "work", out / "out",
                 progress=False, stop_after_steps=stop_after_steps)


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
