"""What must match for two runs to share one leaderboard: ONE definition, for the hash recorded in
results.json and for the differences `pad-harness report` names when it refuses to merge two runs.

Everything that changes a number in the table must match: teacher, student, prompts, sampling, the
budget's result fields (`Budget.result_inputs`: not where checkpoints go, nor the optimizer defaults that
each method may override, harness.config.OPTIMIZER_FIELDS), benchmarks with the judge that
grades each (`judge_key`: its model, backend and prompt, with `official` resolved per benchmark; not its
concurrency, retries, timeout or prices) and the result params of the backends the run uses. Methods,
seeds, names and logging may differ (`MAY_DIFFER_BETWEEN_MERGED_RUNS`): comparing them is what merging
is for. The same rule decides the artifacts' keys (harness.stages.evaluation.judge_identity_for_key).
"""

from __future__ import annotations

from typing import Any

from harness.benchmarks.base import benchmark_from_spec
from harness.config import OPTIMIZER_FIELDS, Experiment
from harness.judges.choice import judge_key, judge_spec_for
from harness.models.pool import backend_key
from harness.results import MAY_DIFFER_BETWEEN_MERGED_RUNS
from harness.store import hash_inputs


def comparable_experiment(exp: Experiment) -> dict[str, Any]:
    fields = {k: v for k, v in exp.model_dump(mode="json").items() if k not in MAY_DIFFER_BETWEEN_MERGED_RUNS}
    # The budget's optimizer fields are defaults each method may override: every row records its own.
    fields["budget"] = {k: v for k, v in exp.budget.result_inputs().items() if k not in OPTIMIZER_FIELDS}
    for model in ("teacher", "student"):  # where the weights sit changes no number
        fields[model] = {k: v for k, v in fields[model].items() if k not in ("device_map", "offload")}
    fields.pop("judge", None)  # each benchmark's own judge below
    fields["benchmarks"] = [_benchmark(exp, spec) for spec in exp.benchmarks]
    fields["backends"] = [backend_key(exp.backends, name) for name in sorted({exp.generation_backend,
                                                                             exp.sampling.backend})]
    return fields


def experiment_hash(exp: Experiment) -> str:
    return hash_inputs(comparable_experiment(exp))


def _benchmark(exp: Experiment, spec: Any) -> dict[str, Any]:
    bench = benchmark_from_spec(spec)
    judge = judge_key(judge_spec_for(exp.judge, spec, bench)) if bench.needs_judge else None
    return {**spec.model_dump(mode="json", exclude={"judge"}), "judge": judge}
