"""The estimate against a finished run: per stage and kind, estimated vs measured seconds and tokens.

    python -m harness.estimate.validate RUN_DIR [--on cpu] [--experiment FILE]

reads RUN_DIR/experiment.yaml (or FILE), prices its plan and reads each finished stage's manifest
(`artifacts/<kind>/<label>-<key>/manifest.json`: `wall_time_s`, `accounting`, `judge_usage`). Stages are
matched by kind and label, so a run made by an older version of the code (other keys) still compares.
Benchmark-internal shared artifacts (`artifacts/shared/`, e.g. teacher_agreement's candidates) are part of
the answers they were computed for. docs/performance.md shows the output for the measured runs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.estimate.price import PlanEstimate
from harness.estimate.table import KINDS, human


@dataclass
class Measured:
    wall_s: float = 0.0
    tokens: dict[str, float] = field(default_factory=lambda: {"generated": 0.0, "scored": 0.0, "trained": 0.0})


def _tokens(kind: str, manifest: dict[str, Any]) -> dict[str, float]:
    acc = manifest.get("accounting") or {}
    if kind == "train":
        return {"generated": acc.get("student_generation_tokens_online", 0),
                "scored": acc.get("teacher_forward_tokens_online", 0), "trained": acc.get("student_backward_tokens", 0)}
    if kind == "judgements":
        usage = manifest.get("judge_usage") or {}
        return {"generated": usage.get("completion_tokens", 0), "scored": usage.get("prompt_tokens", 0), "trained": 0}
    generated = sum(v for k, v in acc.items() if k.endswith("generation_tokens"))
    scored = sum(v for k, v in acc.items() if k.endswith("forward_tokens"))
    return {"generated": generated, "scored": scored, "trained": 0}


def measured_stages(run_dir: Path) -> dict[tuple[str, str], Measured]:
    """(kind, label) -> what the finished stage recorded; `shared` artifacts under ("answers", "(shared)")."""
    out: dict[tuple[str, str], Measured] = {}
    for path in sorted((run_dir / "artifacts").glob("*/*/manifest.json")):
        kind, label = path.parent.parent.name, path.parent.name.rsplit("-", 1)[0]
        manifest = json.loads(path.read_text())
        if kind == "shared":
            kind, label = "answers", f"(shared) {label}"
        m = out.setdefault((kind, label), Measured())
        m.wall_s += float(manifest.get("wall_time_s") or 0.0)
        for name, value in _tokens(kind, manifest).items():
            m.tokens[name] += float(value)
    return out


def artifact_label(label: str) -> str:
    """A stage's label as its artifact folder spells it (harness.store.ArtifactStore.artifact)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]


def _ratio(estimate: float, measured: float) -> str:
    return f"{estimate / measured:6.2f}" if measured > 0 else "     -"


def compare(est: PlanEstimate, measured: dict[tuple[str, str], Measured], per_stage: bool = False) -> str:
    """A text table: per kind (and optionally per stage) estimated vs measured seconds and tokens."""
    head = f"  {'kind':10s} {'stage':34s} {'est s':>8s} {'meas s':>8s} {'ratio':>6s}   " \
           f"{'gen est/meas':>15s} {'scored est/meas':>17s} {'trained est/meas':>17s}"
    lines = [head]
    for kind in KINDS:
        stages = [s for s in est.stages if s.kind == kind]
        rows = [(s.label, s.seconds, {"generated": s.generated, "scored": s.scored, "trained": s.trained},
                 measured.get((kind, artifact_label(s.label)), Measured())) for s in stages]
        rows += [(label, 0.0, {"generated": 0.0, "scored": 0.0, "trained": 0.0}, m)
                 for (k, label), m in measured.items() if k == kind and label.startswith("(shared)")]
        if not rows:
            continue
        if per_stage:
            lines += [_row(kind, label, sec, tok, m) for label, sec, tok, m in rows]
        total = Measured(sum(m.wall_s for *_, m in rows))
        tokens = {name: sum(tok[name] for _, _, tok, _ in rows) for name in total.tokens}
        for name in total.tokens:
            total.tokens[name] = sum(m.tokens[name] for *_, m in rows)
        lines.append(_row(kind, f"({len(stages)} stages)", sum(sec for _, sec, _, _ in rows), tokens, total))
    all_measured = sum(m.wall_s for m in measured.values())
    lines.append(f"  {'TOTAL':10s} {'':34s} {est.total('seconds'):8.1f} {all_measured:8.1f} "
                 f"{_ratio(est.total('seconds'), all_measured)}")
    return "\n".join(lines)


def _row(kind: str, label: str, seconds: float, tokens: dict[str, float], m: Measured) -> str:
    cells = [f"{human(tokens[n]):>7s}/{human(m.tokens[n]):<7s}" for n in ("generated", "scored", "trained")]
    return (f"  {kind:10s} {label[:34]:34s} {seconds:8.1f} {m.wall_s:8.1f} {_ratio(seconds, m.wall_s)}   "
            f"{cells[0]:>15s} {cells[1]:>17s} {cells[2]:>17s}")


def main(argv: list[str] | None = None) -> int:
    from harness.config import load_experiment
    from harness.estimate.price import estimate_plan
    from harness.pipeline import Pipeline

    parser = argparse.ArgumentParser(prog="python -m harness.estimate.validate", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--on", default="cpu")
    parser.add_argument("--experiment", help="the run's experiment file (default: RUN_DIR/experiment.yaml)")
    parser.add_argument("--per-stage", action="store_true")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    exp = load_experiment(args.experiment or run_dir / "experiment.yaml")
    pipe = Pipeline(exp, run_dir, progress=False)
    est = estimate_plan(pipe.build_plan(project_selections=True), pipe.ctx, args.on)
    print(f"{run_dir}: estimate on {est.accelerator.name} vs measured wall time")
    print(compare(est, measured_stages(run_dir), per_stage=args.per_stage))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
