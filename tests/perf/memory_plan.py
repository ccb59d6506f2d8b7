"""The memory plan (harness.estimate.memory) against the measured peak of short training runs.

    python tests/perf/memory_plan.py [--presets tiny,smol] [--methods pad,dpo,sft] [--steps 2] [--lora]

For each preset the upstream stages (prompts, samples, signals, trainset) are computed once in a scratch
run directory; then each method trains `--steps` optimizer steps in a FRESH subprocess, so that process's
peak is that training's. Measured:
- CPU: the process's peak resident set (`ru_maxrss`) minus its resident set just before the train stage
  starts (models are loaded inside the stage: the pool's student, the copy that trains, AdamW state,
  activations; the trainer's modules are imported before the baseline). The allocator keeps freed pages, so this is what the machine must hold, a slight upper
  bound of live tensors.
- GPU: torch.cuda.max_memory_allocated() during the stage minus memory_allocated() before it (live tensors;
  the caching allocator reserves a little more).
The estimate is `pending_training_memory` (what `pad-harness run` gates on) for the same plan: upstream
stages cached, so no teacher is held. `--lora` adds `student.lora.r=16` (skipped, with a line, where
harness.training.lora or peft is missing). docs/performance.md holds the table this printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"tiny": "leaderboards/tiny.yaml", "smol": "leaderboards/smol.yaml"}


def _overrides(steps: int, lora: bool) -> list[str]:
    out = [f"budget.max_steps={steps}", "budget.checkpoint_every=0"]
    return out + (["student.lora.r=16"] if lora else [])


def _pipeline(preset: str, run_dir: Path, steps: int, lora: bool):  # noqa: ANN202 - a harness.pipeline.Pipeline
    from harness.config import load_experiment
    from harness.pipeline import Pipeline

    exp = load_experiment(ROOT / PRESETS[preset], tuple(_overrides(steps, lora)))
    return Pipeline(exp, run_dir, progress=False, ignore_memory_plan=True)


def prepare(preset: str, run_dir: Path, steps: int, lora: bool) -> None:
    """Compute the stages training reads (prompts, samples, signals, trainset), once."""
    pipe = _pipeline(preset, run_dir, steps, lora)
    for step in pipe.build_plan().steps:
        if step.kind in ("prompts", "samples", "signal", "trainset") and not step.done:
            pipe._run_step(step)
    pipe.ctx.close()


def child(preset: str, run_dir: Path, method: str, steps: int, lora: bool) -> dict[str, float]:
    """Train one method in this (fresh) process; the estimate and the measured peak, bytes."""
    import psutil
    import torch

    from harness.estimate.gate import device_capacity_bytes, pending_training_memory

    pipe = _pipeline(preset, run_dir, steps, lora)
    plan = pipe.build_plan()
    capacity, on_gpu = device_capacity_bytes()
    priced = dict((s.label, m) for s, m in pending_training_memory(plan, pipe.ctx, capacity, on_gpu))
    step = next(s for s in plan.steps if s.kind == "train" and s.spec.row_name == method and not s.done)
    estimate = priced[step.label].memory
    import accelerate  # noqa: F401 - imported before the baseline: module code is not what is measured

    import harness.training.trainer  # noqa: F401

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory(prefix="memplan-") as out:
        step.run(Path(out))
    if on_gpu:
        measured = torch.cuda.max_memory_allocated() - before
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # Linux: KiB
    return {"estimate": estimate.total, "measured": float(measured), "parts": dict(estimate.parts)}


def lora_available() -> str | None:
    """Why LoRA cannot be measured here, or None."""
    if importlib.util.find_spec("harness.training.lora") is None:
        return "harness/training/lora.py does not exist yet"
    if importlib.util.find_spec("peft") is None:
        return "peft is not installed (pip install 'pad-harness[lora]')"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,smol")
    parser.add_argument("--methods", default="pad,dpo,sft")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--lora", action="store_true", help="also measure LoRA (student.lora.r=16)")
    parser.add_argument("--work", default=None, help="scratch run directories (default: a temporary folder)")
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "RUN_DIR", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--child-lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        preset, run_dir, method = args.child
        print("RESULT " + json.dumps(child(preset, Path(run_dir), method, args.steps, args.child_lora)))
        return 0
    modes = [False]
    if args.lora:
        why = lora_available()
        if why is None:
            modes.append(True)
        else:
            print(f"LoRA skipped: {why}")
    work = Path(args.work or tempfile.mkdtemp(prefix="memplan-"))
    print(f"{'preset':7s} {'method':7s} {'mode':5s} {'estimate GiB':>13s} {'measured GiB':>13s} {'ratio':>6s}")
    for preset in args.presets.split(","):
        for lora in modes:
            run_dir = work / preset  # LoRA is no part of the upstream stages: theirs are shared
            prepare(preset, run_dir, args.steps, lora)
            for method in args.methods.split(","):
                command = [sys.executable, __file__, "--steps", str(args.steps), "--child", preset, str(run_dir),
                           method] + (["--child-lora"] if lora else [])
                done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), check=False)
                line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(f"{preset:7s} {method:7s} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(line.removeprefix("RESULT "))
                print(f"{preset:7s} {method:7s} {'lora' if lora else 'full':5s} {r['estimate'] / 2**30:13.3f} "
                      f"{r['measured'] / 2**30:13.3f} {r['estimate'] / max(r['measured'], 1):6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
