"""Golden loss trajectories: every registered method, trained a few steps on a fixed tiny setup through the
real trainer, reproduces the per-step losses recorded in tests/data/golden_losses.json (setup, tolerance
and its reasons: tests/helpers/golden.py). A new method fails here until its trajectory is recorded."""

from __future__ import annotations

import pytest
from helpers import golden

RECORDED: dict = golden.load_golden()["methods"]
HOW = f"run `{golden.REGENERATE}` from the repository root and commit tests/data/golden_losses.json"


@pytest.mark.parametrize("name", golden.registered_methods())
def test_loss_trajectory_matches_the_recorded_one(name: str) -> None:
    if name not in RECORDED:
        pytest.fail(f"method {name!r} has no recorded loss trajectory in {golden.GOLDEN_PATH}: {HOW}",
                    pytrace=False)
    got = golden.trajectory(name)
    off = golden.compare(RECORDED[name]["losses"], got)
    if off:
        pytest.fail(f"{name}: training losses moved beyond rtol={golden.RTOL}, atol={golden.ATOL}:\n  "
                    + "\n  ".join(off) + f"\nIf the change is intended, {HOW}.", pytrace=False)


def test_every_recorded_method_is_still_registered() -> None:
    stale = sorted(set(RECORDED) - set(golden.registered_methods()))
    assert not stale, f"recorded but no longer registered: {stale}; {HOW}"


def test_the_comparison_catches_a_small_change() -> None:
    recorded = [1.0, 0.5, 0.0]
    assert golden.compare(recorded, [1.0 + 5e-5, 0.5, 5e-7]) == []  # within rtol / atol
    assert golden.compare(recorded, [1.0, 0.5 * (1 + 1e-3), 0.0])[0].startswith("step 2:")
    assert golden.compare(recorded, [1.0, 0.5]) == ["2 steps, 3 recorded"]
