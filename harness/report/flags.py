"""What every report says beside the scores of a row: how many of its answers were cut at
`max_new_tokens`, and whether its judge is the benchmark's official one (numbers from another judge are
not comparable with the published leaderboards).
"""

from __future__ import annotations

from typing import Any

from harness.results import RowResult

NON_OFFICIAL_MARK = "†"


def answer_flags(groups: list[tuple[str, list[RowResult]]]) -> list[dict[str, Any]]:
    """One entry per (row, benchmark), summed over the row's seeds."""
    out = []
    for name, runs in groups:
        benches = sorted({b for r in runs for b in r.benchmarks})
        for bench in benches:
            results = [r.benchmarks[bench] for r in runs if bench in r.benchmarks]
            judged = [b for b in results if b.judge_is_official is not None]
            truncated = [b.truncated for b in results]
            models = sorted({_judge_model(b.judge) for b in judged if b.judge.get("model")})
            out.append({
                "row": name,
                "benchmark": bench,
                "answers": sum(b.answers for b in results),
                "truncated": None if any(t is None for t in truncated) else sum(t for t in truncated if t is not None),
                "judge": ", ".join(models) or None,
                "official_judge": next((b.official_judge for b in results if b.official_judge), None),
                # None: judge-free; False if any seed's judge was not the official one
                "judge_is_official": None if not judged else all(b.judge_is_official for b in judged),
            })
    return out


def _judge_model(identity: dict[str, Any]) -> str:
    """The judge's model name (a local judge's identity nests its model's own identity)."""
    model = identity.get("model")
    return str(model.get("model") if isinstance(model, dict) else model)


def non_officially_judged(flags: list[dict[str, Any]], row: str) -> list[dict[str, Any]]:
    return [f for f in flags if f["row"] == row and f["judge_is_official"] is False]


def row_label(flags: list[dict[str, Any]], row: str) -> str:
    """The row name, marked when some benchmark of it was judged by a non-official judge."""
    return f"{row} {NON_OFFICIAL_MARK}" if non_officially_judged(flags, row) else row


def judge_footnote(flags: list[dict[str, Any]]) -> str | None:
    """One sentence naming each benchmark judged by a non-official judge, or None."""
    seen: dict[str, tuple[str, str]] = {}
    for f in flags:
        if f["judge_is_official"] is False:
            seen.setdefault(f["benchmark"], (f["judge"] or "?", f["official_judge"] or "?"))
    if not seen:
        return None
    parts = [f"{bench} by {judge} (official: {official})" for bench, (judge, official) in sorted(seen.items())]
    return (f"{NON_OFFICIAL_MARK} judged by a non-official judge, not comparable with published numbers: "
            + "; ".join(parts) + ".")


def truncation_text(flag: dict[str, Any]) -> str:
    if flag["truncated"] is None:
        return "not recorded"
    return f"{flag['truncated']} of {flag['answers']}"


FLAG_HEADER = ["Row", "Benchmark", "Truncated answers", "Judge", "Official judge"]


def flag_table(flags: list[dict[str, Any]]) -> list[list[str]]:
    """The rows of the "answers cut, and judges" table, the same in every report format."""
    return [[f["row"], f["benchmark"], truncation_text(f), f["judge"] or "(judge-free)",
             "" if f["judge_is_official"] is None else
             ("yes" if f["judge_is_official"] else f"no (official: {f['official_judge']})")]
            for f in flags]


def runtime_warning(provenance: dict[str, Any]) -> str | None:
    """The run directory's artifacts were made under different thread counts, devices or torch builds
    (harness.runtime_facts): said under the scores, since bitwise equalities between them do not hold."""
    runtime = provenance.get("runtime")
    warning = runtime.get("warning") if isinstance(runtime, dict) else None
    return f"Warning: {warning}." if warning else None
