"""Golden plan keys: the tiny and smol presets plan exactly the artifact keys recorded in
tests/data/plan_keys.json (what is compared, and the one machine property pinned: tests/helpers/plan_keys.py).
Only the plan is built: nothing runs and no weights are loaded."""

from __future__ import annotations

import pytest
from helpers import plan_keys

RECORDED: dict = plan_keys.load_golden().get("presets", {})
HOW = f"run `{plan_keys.REGENERATE}` from the repository root and commit tests/data/plan_keys.json"


@pytest.mark.parametrize("preset", list(plan_keys.PRESETS))
def test_plan_keys_match_the_recorded_ones(preset: str, tmp_path) -> None:
    why = plan_keys.missing_requirement(preset)
    if why:
        pytest.skip(why)
    if preset not in RECORDED:
        pytest.fail(f"preset {preset!r} has no recorded plan keys in {plan_keys.GOLDEN_PATH}: {HOW}", pytrace=False)
    moved = plan_keys.changes(RECORDED[preset]["steps"], plan_keys.preset_steps(preset, tmp_path))
    if moved:
        shown = moved[:40] + ([f"... and {len(moved) - 40} more"] if len(moved) > 40 else [])
        pytest.fail(f"{preset} ({plan_keys.PRESETS[preset]}): the plan changed at {len(moved)} steps; an "
                    f"artifact whose key moved is not found in existing run directories (it is recomputed):\n  "
                    + "\n  ".join(shown)
                    + f"\nIf the change is intended (a stage's inputs, a STAGE_VERSIONS bump, an edited preset), "
                      f"{HOW} with it.", pytrace=False)


def test_a_budget_change_moves_exactly_the_keys_downstream_of_training(tmp_path) -> None:
    """The comparison can fail: a different learning rate moves every train key and the keys of the trained
    rows' answers and judgements, and nothing upstream of training nor the teacher's and student's rows."""
    exp = plan_keys.load_preset("tiny")
    changed = exp.model_copy(update={"budget": exp.budget.model_copy(update={"learning_rate": 2e-3})})
    before = plan_keys.plan_steps(exp, tmp_path / "a")
    after = plan_keys.plan_steps(changed, tmp_path / "b")
    moved = {line.split(": ", 1)[0] for line in plan_keys.changes(before, after)}
    untrained = ("teacher-", "student (untrained)-")
    expected = {step for step in before
                if step.split(":", 1)[0] in ("train", "answers", "judgements")
                and not step.split(":", 1)[1].startswith(untrained)}
    assert moved == expected
    assert len(expected) == 9 * (1 + 2 * len(exp.benchmarks))  # 9 methods x 1 seed: train + answers + judgements
