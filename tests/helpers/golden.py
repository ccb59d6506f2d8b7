"""Golden loss trajectories (torchtune's habit): every method registered under the `harness.methods` entry
points trains a tiny random-init model for a few optimizer steps through the real trainer, and the per-step
losses are compared with values recorded in tests/data/golden_losses.json.

Everything is fixed: the models (tiny llamas from fixed seeds, sharpened as in tests/helpers/signals.py), the
synthetic prompt set (tests/helpers/training.make_groups with 3 responses each), the signals (computed from
those models one sequence at a time; MCQ preferences from fixed win weights), the budget, fp32 on the CPU
with one thread, and the on-policy "sampler" (GKD), a deterministic stand-in returning a fixed function of
the seed it is given, so a sampled token can never flip and turn float noise into a jump.

The recorded values are produced only by `python -m tests.golden.regenerate_losses` (run from the
repository root), which calls `trajectory` below exactly as the test does.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from harness.methods.base import PromptGroup, Signal
from harness.registry import METHODS, Registry
from harness.training import train

from .signals import add_model_signals, preference_matrix, sharpened_pair
from .training import budget, make_groups

GOLDEN_PATH = Path(__file__).resolve().parents[1] / "data" / "golden_losses.json"
REGENERATE = "python -m tests.golden.regenerate_losses"

STEPS = 4
PROMPTS = 8
RESPONSES = 3
TOPK = 4
SEED = 7
# Two prompts per optimizer step in micro-batches of one: gradient accumulation is on the path too.
BUDGET = dict(max_steps=STEPS, effective_batch=2, micro_batch=1, max_length=64, max_prompt_length=32,
              learning_rate=1e-3, warmup_ratio=0.0, schedule="cosine", mixed_precision="no")

# Float32 on one CPU thread repeats bit for bit on one machine; another CPU, BLAS or torch build may round
# sums differently (~1e-7 relative per op, amplified a little by 4 Adam steps to ~1e-6). rtol 1e-4 leaves
# ~100x room for that, while a real change (a loss's beta, a normalisation, a dropped term, the LR
# schedule) moves the losses by 1e-3 or more. atol covers losses that sit at zero (hinge-type losses).
RTOL = 1e-4
ATOL = 1e-6


def registered_methods() -> list[str]:
    """The methods installed through entry points (a fresh scan: in-process registrations by other tests
    do not count, a newly declared entry point does)."""
    return Registry(METHODS.group, METHODS.kind).names()


def golden_groups(student: Any, teacher: Any) -> list[PromptGroup]:
    rng = random.Random(SEED)
    groups = make_groups(PROMPTS, seed=SEED, responses=RESPONSES)
    for i, group in enumerate(groups):
        wins = rng.sample([0.5, 1.0, 2.0, 3.0, 4.0], RESPONSES)  # distinct: a clear teacher ranking
        group.signals[Signal.MCQ_PREFERENCE] = preference_matrix(wins)
        add_model_signals(group, student, teacher, TOPK)
        group.signals[Signal.TEACHER_SAMPLES] = {"responses": [f"teacher answer {i} " + group.responses[0]],
                                                 "finished": [True]}
    return groups


def fixed_sampler(tokenizer: Any) -> Callable[..., list[list[int]]]:
    """Stands in for `Generator.live_sampler`: one fixed answer per prompt, a function of the seed given."""

    def sample(model: Any, prompts: list[list[int]], max_new_tokens: int, seed: int, **_: Any) -> list[list[int]]:
        return [tokenizer.encode(f"answer {seed % 97} {i}", add_special_tokens=False)[:max_new_tokens]
                for i in range(len(prompts))]

    return sample


@contextmanager
def _deterministic_cpu() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trajectory(name: str, params: dict[str, Any] | None = None) -> list[float]:
    """Per-step training losses of method `name` (default params unless given) on the fixed setup."""
    with _deterministic_cpu():
        student, teacher = sharpened_pair()
        groups = golden_groups(student, teacher)
        method = Registry(METHODS.group, METHODS.kind).get(name)(params or {})
        method.check_models(teacher, student)
        groups = method.filter_groups(groups)
        with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
            result = train(method, groups, student, budget(**BUDGET), SEED, Path(tmp) / "work", Path(tmp) / "out",
                           teacher_loader=lambda: teacher, generator=fixed_sampler(student.tokenizer),
                           progress=False)
    assert result.completed and len(result.log_rows) == STEPS, (name, result.stop_reason)
    return [float(row["loss"]) for row in result.log_rows]


def load_golden(path: Path = GOLDEN_PATH) -> dict[str, Any]:
    if not path.is_file():
        return {"methods": {}}
    return json.loads(path.read_text())


def compare(expected: list[float], got: list[float]) -> list[str]:
    """One line per step outside the tolerance (empty: a match)."""
    if len(expected) != len(got):
        return [f"{len(got)} steps, {len(expected)} recorded"]
    return [f"step {i + 1}: {g!r} vs recorded {e!r} (rel {abs(g - e) / max(abs(e), 1e-30):.2e})"
            for i, (e, g) in enumerate(zip(expected, got, strict=True))
            if abs(g - e) > ATOL + RTOL * abs(e)]
