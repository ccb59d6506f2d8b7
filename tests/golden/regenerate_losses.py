"""Rewrite tests/data/golden_losses.json from the current code, and print what changed.

    python -m tests.golden.regenerate_losses          (from the repository root)
    python tests/golden/regenerate_losses.py [METHOD ...]

With method names, only those are recomputed (the others keep their recorded values); methods no longer
registered are dropped. Run it when a method is added, or when a loss is changed on purpose, and commit
the JSON with the change that explains it.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # tests/: helpers, conftest (as under pytest)

import torch  # noqa: E402
from helpers import golden  # noqa: E402


def main(argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the trainer's save_pretrained bar, once per method
    names = golden.registered_methods()
    unknown = sorted(set(argv) - set(names))
    if unknown:
        print(f"not registered: {', '.join(unknown)}; registered: {', '.join(names)}", file=sys.stderr)
        return 2
    old = golden.load_golden()
    recorded: dict = old.get("methods", {})
    methods = {}
    for name in names:
        if argv and name not in argv and name in recorded:
            methods[name] = recorded[name]
            continue
        losses = golden.trajectory(name)
        methods[name] = {"losses": losses}
        before = recorded.get(name, {}).get("losses")
        if before is None:
            print(f"{name}: new {losses}")
        elif before == losses:
            print(f"{name}: unchanged")
        else:
            off = golden.compare(before, losses)
            print(f"{name}: changed ({'outside' if off else 'within'} the test's tolerance)")
            for i, (b, a) in enumerate(zip(before, losses, strict=False)):
                print(f"    step {i + 1}: {b!r} -> {a!r}")
    for name in sorted(set(recorded) - set(names)):
        print(f"{name}: removed (no longer registered)")
    data = {
        "_about": "Per-step training losses of every registered method on a fixed tiny setup "
                  "(tests/helpers/golden.py). Written by `" + golden.REGENERATE + "`; never edit by hand.",
        "setup": {"steps": golden.STEPS, "prompts": golden.PROMPTS, "responses": golden.RESPONSES,
                  "topk": golden.TOPK, "seed": golden.SEED, "budget": golden.BUDGET},
        "recorded_with": {"torch": torch.__version__, "python": platform.python_version(),
                          "machine": platform.machine()},
        "methods": methods,
    }
    golden.GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
    golden.GOLDEN_PATH.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {golden.GOLDEN_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
