"""Text renderings of a `Leaderboard`: leaderboard.json, leaderboard.csv and LEADERBOARD.md.

Formatting lives here (and is reused by the HTML report) so a number reads the same everywhere.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import harness.report.tuning as tuning
from harness.report.columns import Column
from harness.report.flags import FLAG_HEADER, flag_table, judge_footnote, row_label, runtime_warning
from harness.report.leaderboard import Cell, Leaderboard
from harness.report.paired import MIN_ITEMS_TO_RESOLVE
from harness.store import write_json_atomic, write_text_atomic

LEGEND = (
    "Cells: mean over training seeds. `a ± b`: 95% Student-t interval over seeds (seed noise). "
    "With one seed: `(SE s)` is the benchmark's own standard error and `[l, h]` its own interval "
    "(item/judge noise). Empty: the run did not produce that metric."
)


def format_value(col: Column, v: float | None) -> str:
    if v is None:
        return ""
    if col.kind == "count":
        if abs(v) >= 1e6:
            return _si(v)
        return f"{v:,.{col.digits}f}"
    if col.kind == "seconds":
        return f"{v / 3600:.2f} h" if v >= 3600 else (f"{v / 60:.1f} min" if v >= 120 else f"{v:.1f} s")
    if col.kind == "bytes":
        return f"{v / 2**30:.2f} GiB" if v >= 2**30 else f"{v / 2**20:.1f} MiB"
    if col.kind == "flops":
        return f"{v:.2e}"
    return f"{v:.{col.digits}f}"


def _si(v: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:.0f}"


def cell_text(col: Column, cell: Cell | None) -> str:
    if cell is None:
        return ""
    text = format_value(col, cell.mean)
    if col.is_accounting:
        return text
    if cell.seed_high is not None:
        return f"{text} ± {format_value(col, cell.seed_high - cell.mean)}"
    if cell.run_se is not None:
        return f"{text} (SE {format_value(col, cell.run_se)})"
    if cell.run_ci_low is not None and cell.run_ci_high is not None:
        return f"{text} [{format_value(col, cell.run_ci_low)}, {format_value(col, cell.run_ci_high)}]"
    return text


VS_UNTRAINED_LEGEND = (
    "Each row minus the untrained student, paired over the same items (mean per-item difference, 95% "
    "bootstrap interval). MDD: the minimum detectable difference at this size (80% power, two-sided 5%): "
    "a true difference smaller than it is usually missed, so \"no\" below it means \"cannot tell\", "
    f"not \"no effect\". Under {MIN_ITEMS_TO_RESOLVE} items nothing is called resolved (a bootstrap over so "
    "few understates the spread)."
)
VS_UNTRAINED_HEADER = ["Row", "Metric (per item)", "Items", "Diff", "95% CI", "MDD", "Resolved"]


def vs_untrained_lines(lb: Leaderboard) -> list[list[str]]:
    return [[c["row"], c["metric_label"], str(c["n_items"]), _f(c["diff"], 4), _ci(c),
             "no variance" if c["mdd"] is None else _f(c["mdd"], 4),
             "yes" if c["resolved"] else ("too few items" if c["n_items"] < MIN_ITEMS_TO_RESOLVE else "no")]
            for c in lb.vs_untrained]


RESOLUTION_LEGEND = (
    "Per benchmark metric: the median MDD over the method rows (a method's true difference from the untrained "
    "student must be about this large to be detected), how many method rows were resolved, and the teacher's "
    "own difference (the gap distillation aims to close)."
)
RESOLUTION_HEADER = ["Metric (per item)", "Items", "Median method MDD", "Methods resolved", "Teacher diff",
                     "Teacher resolved"]


def resolution_lines(lb: Leaderboard) -> list[list[str]]:
    def yes_no(v: bool | None) -> str:
        return "" if v is None else ("yes" if v else "no")

    return [[r["metric_label"], str(r["n_items"]),
             r.get("note") or ("no variance" if r["median_method_mdd"] is None else _f(r["median_method_mdd"], 4)),
             f"{r['methods_resolved']} of {r['methods']}", _f(r["teacher_diff"], 4), yes_no(r["teacher_resolved"])]
            for r in lb.resolution]


def format_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def write_json(lb: Leaderboard, path: Path) -> Path:
    write_json_atomic(path, lb.to_json())
    return path


def csv_text(lb: Leaderboard) -> str:
    """One line per row; each metric with its seed interval and the run's own error, machine-readable."""
    header = ["row", "kind", "method", "models", "n_seeds"]
    tuning_columns = any(r.kind in ("method", "external") for r in lb.rows)
    for col in lb.columns:
        header.append(col.key)
        if not col.is_accounting:
            header += [f"{col.key}.seed_ci95_low", f"{col.key}.seed_ci95_high"]
            if col.se_names:
                header.append(f"{col.key}.run_se")
            if col.ci_metrics:
                header += [f"{col.key}.run_ci_low", f"{col.key}.run_ci_high"]
    flagged = sorted({f["benchmark"] for f in lb.answer_flags})
    for bench in flagged:
        header += [f"{bench}.truncated_answers", f"{bench}.answers", f"{bench}.judge_is_official"]
    header += tuning.CSV_HEADER if tuning_columns else []
    flags = {(f["row"], f["benchmark"]): f for f in lb.answer_flags}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in lb.rows:
        line: list[Any] = [row.row, row.kind, row.method or "", " | ".join(row.models), len(row.seeds)]
        for col in lb.columns:
            c = row.cells.get(col.key)
            line.append(_num(c.mean if c else None))
            if not col.is_accounting:
                line += [_num(c.seed_low if c else None), _num(c.seed_high if c else None)]
                if col.se_names:
                    line.append(_num(c.run_se if c else None))
                if col.ci_metrics:
                    line += [_num(c.run_ci_low if c else None), _num(c.run_ci_high if c else None)]
        for bench in flagged:
            f = flags.get((row.row, bench))
            official = None if f is None else f["judge_is_official"]
            line += ["" if f is None or f["truncated"] is None else f["truncated"],
                     "" if f is None else f["answers"], "" if official is None else str(official).lower()]
        line += tuning.csv_fields(row) if tuning_columns else []
        writer.writerow(line)
    return buf.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def write_csv(lb: Leaderboard, path: Path) -> Path:
    write_text_atomic(path, csv_text(lb))
    return path


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(_md_escape(c) for c in line) + " |" for line in lines]
    return out


def markdown_text(lb: Leaderboard) -> str:
    used = [c for c in lb.columns if any(c.key in r.cells for r in lb.rows)]
    md = [f"# Leaderboard: {lb.experiment_name}", ""]
    if lb.setting:
        md += [lb.setting, ""]
    md += [f"Experiment hash `{lb.experiment_hash}`. {LEGEND}", "", "## Scores", ""]
    md += _md_scores(lb, [c for c in used if not c.is_accounting])
    footnote = judge_footnote(lb.answer_flags)
    if footnote:
        md += ["", footnote]
    md += ["", warning] if (warning := runtime_warning(lb.provenance)) else []
    if lb.resolution:
        md += ["", "## What this run can resolve", "", RESOLUTION_LEGEND, ""]
        md += _md_table(RESOLUTION_HEADER, resolution_lines(lb))
    if lb.vs_untrained:
        md += ["", "## Versus the untrained student", "", VS_UNTRAINED_LEGEND, ""]
        md += _md_table(VS_UNTRAINED_HEADER, vs_untrained_lines(lb))
    md += _md_tuning(lb)
    md += _md_accounting(lb, [c for c in used if c.is_accounting])
    md += _md_comparisons(lb) + _md_noise(lb) + paper_markdown(lb)
    if lb.answer_flags:
        md += ["", "## Answers cut at max_new_tokens, and judges", ""]
        md += _md_table(FLAG_HEADER, flag_table(lb.answer_flags))
    md += _md_sources(lb)
    md += ["", "## Reproducibility", ""]
    md += [f"- **{k}**: {_md_escape(v)}" for k, v in flatten(lb.provenance)]
    return "\n".join(md) + "\n"


def _md_scores(lb: Leaderboard, cols: list[Column]) -> list[str]:
    return _md_table(
        ["Row", "Seeds", "Tuning"] + [f"{c.group} {c.label}" for c in cols],
        [
            [row_label(lb.answer_flags, r.row), str(len(r.seeds)), r.tuning]
            + [cell_text(c, r.cells.get(c.key)) for c in cols]
            for r in lb.rows
        ],
    )


def _md_tuning(lb: Leaderboard) -> list[str]:
    lines = tuning.settings_lines(lb)
    if not lines:
        return []
    md = ["", "## Optimizer settings and tuning", "", tuning.LEGEND, "", *_md_table(tuning.SETTINGS_HEADER, lines)]
    for name, sel in lb.tuning.items():
        md += ["", f"### Tuning: {_md_escape(tuning.describe_selection(name, sel))}", "",
               *_md_table(tuning.TRIALS_HEADER, tuning.trial_lines(sel)), "", tuning.cost_line(sel)]
        md += [f"- **warning**: {_md_escape(w)}" for w in sel.get("warnings", [])]
    return md


def _md_accounting(lb: Leaderboard, cols: list[Column]) -> list[str]:
    if not cols:
        return []
    lines = [[r.row] + [cell_text(c, r.cells.get(c.key)) for c in cols]
             for r in lb.rows if any(c.key in r.cells for c in cols)]  # the teacher trains nothing
    return ["", "## Budget accounting (mean per seed)", "", *_md_table(["Row"] + [c.label for c in cols], lines)]


def _md_comparisons(lb: Leaderboard) -> list[str]:
    if not lb.comparisons:
        return []
    md = [
        "",
        "## Paired bootstrap vs the best baseline",
        "",
        "Difference of mean per-item score (method − baseline), paired over items, averaged over seeds; "
        "95% percentile interval; two-sided p-value.",
        "",
    ]
    lines = [[c["row"], c.get("metric_label") or c["benchmark"], c["baseline"], str(c["n_items"]),
              _f(c.get("diff")), _ci(c), format_p(c.get("p_value"))] for c in lb.comparisons]
    return md + _md_table(["Row", "Metric (per-item)", "Best baseline", "Items", "Diff", "95% CI", "p"], lines)


def _md_noise(lb: Leaderboard) -> list[str]:
    if not lb.noise:
        return []
    header = ["Row", "Metric", "Seeds", "Seed SD", "Seed 95% ±", "Run SE (reported)", "Item-bootstrap SE"]
    lines = [[n["row"], n["column"], str(n["n_seeds"]), _f(n["seed_sd"]), _f(n["seed_ci_half_width"]),
              _f(n["run_se_reported"]), _f(n["item_bootstrap_se"], 4)] for n in lb.noise]
    return ["", "## Seed noise vs within-run (item/judge) noise", "", *_md_table(header, lines)]


def _md_sources(lb: Leaderboard) -> list[str]:
    models = [[r.row, ", ".join(r.models), ", ".join("" if s is None else str(s) for s in r.seeds)] for r in lb.rows]
    benches = [[b] + ["; ".join(s.get(k, [])) for k in ("data_source", "judge", "decoding", "subset", "notes")]
               for b, s in sorted(lb.sources.items())]
    return ["", "## Where every number comes from", "", *_md_table(["Row", "Model(s)", "Seeds"], models), "",
            *_md_table(["Benchmark", "Data source", "Judge", "Decoding", "Subset", "Notes"], benches)]


def paper_layout(lb: Leaderboard) -> tuple[list[str], list[str]]:
    """(column keys, row names) of the reproduced-vs-reported table.

    Rows in leaderboard order, then rows only the paper has."""
    ref = lb.paper or {"rows": {}}
    known = {c.key for c in lb.columns}
    keys: list[str] = []
    for values in ref["rows"].values():
        keys.extend(k for k in values if k not in keys and k in known)
    names = [r.row for r in lb.rows if r.kind == "method" or r.row in ref["rows"]]
    names += [n for n in ref["rows"] if n not in names]
    return keys, names


def paper_cells(lb: Leaderboard, name: str, keys: list[str]) -> list[str]:
    """Ours and the paper's value per key; the paper cell is empty where no source gives a number."""
    ref = lb.paper or {"rows": {}}
    ours = next((r for r in lb.rows if r.row == name), None)
    line: list[str] = []
    for key in keys:
        col = lb.column(key)
        entry = ref["rows"].get(name, {}).get(key)
        line += [
            cell_text(col, ours.cells.get(key) if ours else None),
            "" if entry is None else f"{format_value(col, entry['value'])} [{entry['source']}]",
        ]
    return line


def paper_markdown(lb: Leaderboard) -> list[str]:
    ref = lb.paper
    if not ref:
        return []
    keys, names = paper_layout(lb)
    header = ["Row"] + [
        h for k in keys for h in (f"{lb.column(k).group} {lb.column(k).label} (ours)", "(paper)")
    ]
    md = ["", f"## Reproduced vs reported ({ref.get('title', '')})", ""]
    md += _md_table(header, [[n, *paper_cells(lb, n, keys)] for n in names])
    md += [""] + [
        f"- [{sid}] {s.get('citation', '')} {s.get('url', '')}".rstrip() for sid, s in ref["sources"].items()
    ]
    return md


def _f(v: float | None, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _ci(c: dict[str, Any]) -> str:
    return "" if c.get("ci_low") is None else f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]"


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested provenance as (dotted key, text) pairs, for the footer."""
    if isinstance(obj, dict):
        out: list[tuple[str, str]] = []
        for k in sorted(obj, key=str):
            out += flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(x, (dict, list, tuple)) for x in obj):
            return [(prefix, ", ".join(str(x) for x in obj))]
        out = []
        for i, x in enumerate(obj):
            out += flatten(x, f"{prefix}[{i}]")
        return out
    return [(prefix, "" if obj is None else str(obj))]


def write_markdown(lb: Leaderboard, path: Path) -> Path:
    write_text_atomic(path, markdown_text(lb))
    return path
