"""Small experiments on tiny random-init models, built in one place.

`small_experiment` is the shared builder: tiny:llama teacher (seed 1, "Be brief.") and student (seed 0), a few
ShareGPT prompts, a local tiny judge, and one alpaca_eval2 benchmark of 2 items; each test file states only
what differs. Validating one loads no weights; running one takes seconds.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.config import Experiment, parse_experiment


def small_experiment(name: str, *, prompts: int = 4, samples: int = 2, sample_tokens: int = 6,
                     answer_tokens: int = 4, methods: list[dict[str, Any]] | None = None,
                     budget: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An experiment as its YAML would hold it (a fresh deep copy each call).

    prompts: prompts.count; samples: sampling.candidates and sampling.n; sample_tokens / answer_tokens:
    max_new_tokens of the samples and of the benchmark answers; methods: default `sft` alone; budget: keys
    added to (or replacing) effective_batch 2, max_length 64, max_prompt_length 48; extra: more top-level keys.
    """
    data: dict[str, Any] = {
        "name": name,
        "teacher": {"model": "tiny:llama", "seed": 1, "system_prompt": "Be brief."},
        "student": {"model": "tiny:llama", "seed": 0},
        "prompts": {"source": "sharegpt", "count": prompts, "max_prompt_chars": 100},
        "sampling": {"candidates": samples, "n": samples, "max_new_tokens": sample_tokens},
        "methods": methods if methods is not None else [{"name": "sft"}],
        "budget": {"effective_batch": 2, "max_length": 64, "max_prompt_length": 48, **(budget or {})},
        "benchmarks": [{"name": "alpaca_eval2", "subset": 2, "max_new_tokens": answer_tokens}],
        "judge": {"backend": "local", "model": "tiny:llama"},
        **extra,
    }
    return copy.deepcopy(data)


# The pipeline tests' experiment (test_pipeline, test_disk, test_rundir_integrity, test_multiprocess): three
# methods, two epochs with a checkpoint every step, so caching, resume and selective re-training all show.
PIPELINE = small_experiment(
    "pipe", prompts=6, samples=3, sample_tokens=8, answer_tokens=6, signals={"topk": 4},
    methods=[{"name": "pad", "params": {"mcq_filter": False}}, {"name": "sft"}, {"name": "dpo"}],
    budget={"epochs": 2, "micro_batch": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0, "checkpoint_every": 1},
)


def pipeline_experiment(**overrides: Any) -> Experiment:
    """PIPELINE with top-level keys replaced, parsed."""
    return parse_experiment({**copy.deepcopy(PIPELINE), **overrides}, "test")
