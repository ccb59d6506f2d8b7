"""Which judge grades which benchmark, and whether it is the benchmark's official one.

Each benchmark is defined with a judge model (`Benchmark.official_judge()`: AlpacaEval 2 and Arena-Hard
v0.1 `gpt-4-1106-preview`, Arena-Hard v2.0 `gpt-4.1`, MT-Bench `gpt-4`); numbers from another judge are
not comparable with the published leaderboards. A benchmark may name its own judge (`benchmarks[].judge`);
otherwise the experiment's `judge:` is the fallback. `model: official` in either takes the benchmark's
official judge model with that spec's backend and connection settings (base_url, key, concurrency), so one
OpenAI-compatible endpoint can serve every benchmark with the right model. Reports mark every row judged
by a non-official judge (`harness.report.flags`).
"""

from __future__ import annotations

from typing import Any

from harness.config import BenchmarkSpec, JudgeSpec
from harness.errors import ConfigError

OFFICIAL = "official"  # JudgeSpec.model value: the benchmark's own official judge model
# Settings that change how calls are made, not what the judge answers: out of every cache key.
_VOLATILE = ("api_key_env", "concurrency", "max_retries", "timeout_s", "price_per_1k_input", "price_per_1k_output")


def judge_spec_for(experiment_judge: JudgeSpec, bench_spec: BenchmarkSpec, benchmark: Any) -> JudgeSpec:
    """The judge that grades this benchmark: its own `judge:` or the experiment's, `official` resolved."""
    spec = bench_spec.judge or experiment_judge
    if spec.model != OFFICIAL:
        return spec
    official = benchmark.official_judge()
    if official is None:
        raise ConfigError(
            f"benchmarks: {bench_spec.name} has no official judge model, so `model: official` cannot be "
            f"resolved for it; give the benchmark its own `judge:` with a model"
        )
    return spec.model_copy(update={"model": official})


def is_official(spec: JudgeSpec, benchmark: Any) -> bool:
    """The judge is the benchmark's official model behind an API (a local model of that name is not)."""
    official = benchmark.official_judge()
    return official is not None and spec.model == official and spec.backend != "local"


def judge_key(spec: JudgeSpec) -> dict[str, Any]:
    """What of a judge spec changes judgements (never the API key): the judgements' cache key part. Of the
    backend's own `params`, only its `result_params` set to other than their default count (a spec without
    such params has the key it had before judges took params)."""
    data = spec.model_dump(mode="json")
    for volatile in _VOLATILE:
        data.pop(volatile, None)
    params = data.pop("params", None)
    if params:
        kept = result_params(spec.backend, params)
        if kept:
            data["params"] = kept
    return data


def result_params(backend: str, params: dict[str, Any]) -> dict[str, Any]:
    """The judge `params` that change its judgements (its `result_params`), validated, defaults left out."""
    from harness.judges.factory import judge_class

    cls = judge_class(backend)
    values = cls.parse_params(params, f"judge ({backend}).params").model_dump(mode="json")
    defaults = cls.Params().model_dump(mode="json")
    return {k: values[k] for k in cls.result_params if values[k] != defaults[k]}
