"""The results of one experiment, as the report stage consumes them (`run_dir/results.json`).

The pipeline fills one `RowResult` per evaluated model: the teacher, the untrained student, and every
(method, seed). Reports aggregate rows of the same `row` name over seeds. Everything is plain JSON so
`pad-harness report RUN_DIR...` can merge runs made elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.store import write_json_atomic

# Experiment keys that may differ between runs merged into one leaderboard (what is compared, not how the
# run was named or logged). Everything else - teacher, student, prompts, sampling, budget, benchmarks,
# judge - must match for a comparison to be fair.
MAY_DIFFER_BETWEEN_MERGED_RUNS = frozenset(
    {"methods", "seeds", "name", "description", "setting", "output_dir", "logging", "tuning", "external"}
)


@dataclass
class BenchmarkResult:
    benchmark: str
    metrics: dict[str, float | int | None]  # e.g. win_rate, standard_error, n_wins, avg_length, ...
    notes: list[str] = field(default_factory=list)
    per_item: list[dict[str, Any]] = field(default_factory=list)  # {"id":..., "score": float} for paired tests
    source: str = ""  # which data source produced the items
    judge: dict[str, Any] = field(default_factory=dict)  # judge identity (never a key) + calls/tokens/cost
    decoding: dict[str, Any] = field(default_factory=dict)
    subset: int | None = None
    official_judge: str | None = None  # the judge model the benchmark's official numbers come from
    judge_is_official: bool | None = None  # None: judge-free benchmark
    answers: int = 0  # answer records (items)
    truncated: int | None = None  # answers cut at max_new_tokens (any turn); None: not recorded
    headline: str = ""  # the headline metric where the benchmark's depends on its params (`ScoreResult.headline`)
    lower_is_better: list[str] = field(default_factory=list)  # `ScoreResult.lower_is_better`


@dataclass
class RowResult:
    row: str  # leaderboard row name: "teacher", "student (untrained)", or the method's row name
    kind: Literal["teacher", "student", "method", "external"]
    model: str  # model identity string: which model produced the answers
    method: str | None = None
    seed: int | None = None
    benchmarks: dict[str, BenchmarkResult] = field(default_factory=dict)
    accounting: dict[str, Any] = field(default_factory=dict)  # see harness.training.accounting
    train_log: list[dict[str, Any]] = field(default_factory=list)  # per-step metrics (loss, pad_agreement, ...)
    # The optimizer settings this row trained with (the budget's defaults with the method's own overrides).
    optimizer: dict[str, Any] = field(default_factory=dict)
    # How its settings were chosen: {"tuned": bool, "trials": K, "selected_settings": {...}} (methods only).
    tuning: dict[str, Any] = field(default_factory=dict)
    # Where its artifacts are, relative to the run dir: {"train": dir, "answers": {benchmark: dir},
    # "judgements": {benchmark: dir}} (what `pad-harness export` reads). Empty in older results.
    artifacts: dict[str, Any] = field(default_factory=dict)
    # An external row (`external:`): what it is and where its answers came from (model or files).
    external: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResults:
    experiment_name: str
    setting: str
    experiment: dict[str, Any]  # the validated experiment, as JSON
    experiment_hash: str  # hash of what must match for two runs to share a leaderboard
    rows: list[RowResult] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, git commit, hardware, templates...
    # What `experiment_hash` hashes (harness.stages.comparable): what must match between merged runs, the
    # judges resolved per benchmark. Empty in results written before it was recorded.
    comparable: dict[str, Any] = field(default_factory=dict)
    # Per tuned method (row name): its selection (every trial's settings, dev score and cost; the selected
    # one; warnings), harness.stages.tuning.
    tuning: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> RunResults:
        data = json.loads(Path(path).read_text())
        rows = []
        for r in data.pop("rows"):
            benches = {k: BenchmarkResult(**v) for k, v in r.pop("benchmarks").items()}
            rows.append(RowResult(benchmarks=benches, **r))
        return cls(rows=rows, **data)
