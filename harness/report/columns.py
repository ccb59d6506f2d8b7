"""The one table that maps what benchmarks and training record to leaderboard columns.

To show a new metric, add a `Column` here. A metric a run did not produce is an empty cell, never an
error; a benchmark with no entry here (another lm-eval task, a new plugin) still gets columns, derived
from the metrics it reports (`extra_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str  # stable id used in leaderboard.json/.csv and paper references: "<benchmark>.<metric>"
    label: str  # short header text
    group: str  # header group ("AlpacaEval 2", "Accounting", ...)
    benchmark: str | None  # None for accounting columns
    metric: str
    se_metric: str | None = None  # the run's own standard error of this metric, if the benchmark gives one
    ci_metrics: tuple[str, str] | None = None  # the run's own interval (low, high), e.g. Arena-Hard
    digits: int = 2
    headline: bool = False  # a benchmark's main number: plotted and tested against the best baseline
    # The metric the benchmark's per-item scores (ScoreResult.per_item) measure, so the paired bootstrap vs
    # the best baseline runs on this column and is labelled by it; without one, the first headline column.
    paired: bool = False
    kind: str = "score"  # "score" | "count" | "seconds" | "bytes" | "flops" | "hours"
    higher_is_better: bool = True
    aliases: tuple[str, ...] = ()  # other names the same metric is recorded under (tried in order)

    @property
    def is_accounting(self) -> bool:
        return self.benchmark is None

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (self.metric, *self.aliases)

    @property
    def se_names(self) -> tuple[str, ...]:
        names = (self.se_metric,) if self.se_metric else ()
        return names + tuple(f"{a}_stderr" for a in self.aliases)


def _acct(metric: str, label: str, kind: str, digits: int = 0) -> Column:
    return Column(
        f"accounting.{metric}",
        label,
        "Accounting",
        None,
        metric,
        digits=digits,
        kind=kind,
        higher_is_better=False,
    )


COLUMNS: tuple[Column, ...] = (
    # Teacher agreement on held-out prompts (judge-free, harness.benchmarks.teacher_agreement) comes first:
    # on small runs it is what can separate rows. Per-item scores are the teacher's log-likelihood.
    Column("teacher_agreement.teacher_loglik", "Teacher LL", "Teacher agreement", "teacher_agreement",
           "teacher_loglik", se_metric="teacher_loglik_stderr", digits=3, headline=True, paired=True),
    Column("teacher_agreement.rank_agreement", "Rank tau", "Teacher agreement", "teacher_agreement",
           "rank_agreement", se_metric="rank_agreement_stderr", digits=3),
    Column("teacher_agreement.top1", "Top-1 %", "Teacher agreement", "teacher_agreement", "top1",
           se_metric="top1_stderr", digits=1),
    Column("teacher_agreement.pl_jsd", "PL JSD", "Teacher agreement", "teacher_agreement", "pl_jsd",
           se_metric="pl_jsd_stderr", digits=4, higher_is_better=False),
    Column(
        "alpaca_eval2.length_controlled_winrate",
        "LC (%)",
        "AlpacaEval 2",
        "alpaca_eval2",
        "length_controlled_winrate",
        se_metric="lc_standard_error",
        headline=True,
    ),
    # AlpacaEval's per-item scores are the judge's preferences (WR); LC exists only for the whole set.
    Column(
        "alpaca_eval2.win_rate",
        "WR (%)",
        "AlpacaEval 2",
        "alpaca_eval2",
        "win_rate",
        se_metric="standard_error",
        headline=True,
        paired=True,
    ),
    Column(
        "alpaca_eval2.avg_length", "Len", "AlpacaEval 2", "alpaca_eval2", "avg_length", digits=0, kind="count"
    ),
    Column(
        "arena_hard.score",
        "Score (%)",
        "Arena-Hard",
        "arena_hard",
        "score",
        ci_metrics=("ci_low", "ci_high"),
        headline=True,
    ),
    Column(
        "arena_hard.avg_tokens", "Tokens", "Arena-Hard", "arena_hard", "avg_tokens", digits=0, kind="count"
    ),
    # Counted without the official tiktoken BPE (offline): never shown as arena-hard-auto's count.
    Column(
        "arena_hard.avg_tokens_approx",
        "Tokens (approx.)",
        "Arena-Hard",
        "arena_hard",
        "avg_tokens_approx",
        digits=0,
        kind="count",
    ),
    Column("mt_bench.turn1", "Turn 1", "MT-Bench", "mt_bench", "turn1"),
    Column("mt_bench.turn2", "Turn 2", "MT-Bench", "mt_bench", "turn2"),
    Column("mt_bench.overall", "Overall", "MT-Bench", "mt_bench", "overall", headline=True),
    # GSM8K's lm-eval protocols (gsm8k_cot, gsm8k) name metrics after lm-eval's filters (strict_match,
    # flexible_extract); the aliases keep both spellings working. Flexible is the headline because those
    # protocols' per-item scores (used by the paired bootstrap) are flexible-extract matches.
    Column(
        "gsm8k.exact_match_strict",
        "EM strict",
        "GSM8K",
        "gsm8k",
        "exact_match_strict",
        se_metric="exact_match_strict_stderr",
        aliases=("strict_match",),
    ),
    Column(
        "gsm8k.exact_match_flexible",
        "EM flex",
        "GSM8K",
        "gsm8k",
        "exact_match_flexible",
        se_metric="exact_match_flexible_stderr",
        aliases=("flexible_extract",),
        headline=True,
        paired=True,
    ),
    # GSM8K's protocol zeroeval (the PAD paper's): ZeroEval's accuracy, its per-item scores, and the share of
    # answers with no parsable JSON answer (counted wrong). A run fills either these or the EM columns.
    Column(
        "gsm8k.accuracy",
        "Acc (ZeroEval)",
        "GSM8K",
        "gsm8k",
        "accuracy",
        se_metric="accuracy_stderr",
        headline=True,
        paired=True,
    ),
    Column(
        "gsm8k.no_answer",
        "No answer",
        "GSM8K",
        "gsm8k",
        "no_answer",
        se_metric="no_answer_stderr",
        higher_is_better=False,
    ),
    # IFEval, lm-eval's checker: per-item scores are prompt-level strict (the headline).
    Column(
        "ifeval.prompt_level_strict_acc",
        "Prompt strict",
        "IFEval",
        "ifeval",
        "prompt_level_strict_acc",
        se_metric="prompt_level_strict_acc_stderr",
        headline=True,
        paired=True,
    ),
    Column(
        "ifeval.inst_level_strict_acc",
        "Inst strict",
        "IFEval",
        "ifeval",
        "inst_level_strict_acc",
        se_metric="inst_level_strict_acc_stderr",
    ),
    Column(
        "ifeval.prompt_level_loose_acc",
        "Prompt loose",
        "IFEval",
        "ifeval",
        "prompt_level_loose_acc",
        se_metric="prompt_level_loose_acc_stderr",
    ),
    Column(
        "ifeval.inst_level_loose_acc",
        "Inst loose",
        "IFEval",
        "ifeval",
        "inst_level_loose_acc",
        se_metric="inst_level_loose_acc_stderr",
    ),
    _acct("student_forward_tokens", "Student fwd tok", "count"),
    _acct("student_backward_tokens", "Student bwd tok", "count"),
    _acct("teacher_forward_tokens", "Teacher fwd tok", "count"),
    _acct("teacher_generation_tokens", "Teacher gen tok", "count"),
    _acct("optimizer_steps", "Steps", "count"),
    _acct("wall_time_s", "Wall time", "seconds"),
    _acct("flops", "FLOPs", "flops"),
    _acct("gpu_hours", "GPU-h", "hours", digits=2),
    _acct("peak_memory_bytes", "Peak mem", "bytes"),
)

KNOWN_BENCHMARKS = {c.benchmark for c in COLUMNS if c.benchmark}
# Benchmark-level metrics that are interval bounds, counts or errors of another column, not columns.
_AUXILIARY_SUFFIXES = ("_stderr", "_standard_error", "standard_error", "ci_low", "ci_high", "_se")
GROUP_TITLES = {
    "alpaca_eval2": "AlpacaEval 2",
    "arena_hard": "Arena-Hard",
    "mt_bench": "MT-Bench",
    "gsm8k": "GSM8K",
    "ifeval": "IFEval",
}


def extra_columns(benchmark: str, metrics: dict[str, object]) -> list[Column]:
    """Columns for a benchmark the table does not list (another lm-eval task, a third-party plugin)."""
    cols: list[Column] = []
    numeric = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for metric in sorted(numeric):
        if metric.endswith(_AUXILIARY_SUFFIXES) or metric.startswith("n_"):
            continue
        se = next((m for m in (f"{metric}_stderr", f"{metric}_standard_error") if m in metrics), None)
        cols.append(
            Column(
                f"{benchmark}.{metric}",
                metric,
                GROUP_TITLES.get(benchmark, benchmark),
                benchmark,
                metric,
                se_metric=se,
                headline=not cols,
            )
        )
    return cols


def group_title(benchmark: str) -> str:
    return GROUP_TITLES.get(benchmark, benchmark)
