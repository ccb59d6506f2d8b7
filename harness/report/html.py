"""The self-contained `report.html`: tables, inline SVG plots, sources and a reproducibility footer.

No external asset of any kind (no CDN CSS, fonts, scripts or images), so the file opens offline, prints,
and can be archived as-is. Every string that came from a run is escaped with `html.escape`; the sample viewer
(`harness.report.viewer`) is an inline script that puts run strings into the page as text only.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness.report.tuning as tuning
from harness.report.columns import Column
from harness.report.flags import FLAG_HEADER, flag_table, judge_footnote, row_label, runtime_warning
from harness.report.leaderboard import Leaderboard
from harness.report.plugins import train_curve
from harness.report.svg import KIND_COLOURS, PALETTE, Bar, Point, Series, bar_chart, line_chart, scatter_chart
from harness.report.viewer import CSS as VIEWER_CSS
from harness.report.viewer import SampleViewer
from harness.report.writers import (
    LEGEND,
    RESOLUTION_HEADER,
    RESOLUTION_LEGEND,
    VS_UNTRAINED_HEADER,
    VS_UNTRAINED_LEGEND,
    cell_text,
    flatten,
    format_p,
    paper_cells,
    paper_layout,
    resolution_lines,
    vs_untrained_lines,
)
from harness.store import write_text_atomic

if TYPE_CHECKING:
    from harness.methods.base import TrainCurve

CSS = """
body{font-family:Georgia,'Times New Roman',serif;margin:28px auto;max-width:1320px;color:#111;padding:0 16px}
h1{font-size:24px;margin-bottom:4px} h2{font-size:18px;border-bottom:1px solid #999;margin-top:28px}
p.setting{font-size:15px;font-style:italic} .meta,.legend{color:#444;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin:8px 0;font-family:Helvetica,Arial,sans-serif}
th,td{padding:3px 7px;text-align:right;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#f2f2f2} th.group{text-align:center;border-left:1px solid #bbb}
td.name,th.name{text-align:left;font-weight:bold}
td.left{text-align:left;max-width:520px;word-break:break-word}
tr.teacher td,tr.student td{color:#555;background:#fafafa} td.best{font-weight:bold}
tr.top-rule td{border-top:1.5px solid #333} .plots{display:flex;flex-wrap:wrap;gap:14px}
.plots svg{border:1px solid #ddd;background:#fff} footer{margin-top:30px;font-size:11px;color:#333}
footer td{font-size:11px} .empty{color:#777;font-style:italic}
@media print{body{margin:0;max-width:none} .plots svg{break-inside:avoid}}
"""


def colour_map(lb: Leaderboard) -> dict[str, str]:
    colours: dict[str, str] = {}
    methods = [r for r in lb.rows if r.kind == "method"]
    for i, r in enumerate(methods):
        colours[r.row] = PALETTE[i % len(PALETTE)]
    for r in lb.rows:
        colours.setdefault(r.row, KIND_COLOURS.get(r.kind, "#777"))
    return colours


def _best(lb: Leaderboard, col: Column) -> str | None:
    cands = [r for r in lb.rows if r.kind == "method" and col.key in r.cells]
    if not cands or col.kind != "score":  # "best" length or token count means nothing
        return None
    sign = 1 if col.higher_is_better else -1
    return max(cands, key=lambda r: sign * r.cells[col.key].mean).row


def _table(lb: Leaderboard, cols: list[Column], table_id: str, skip_empty: bool = False,
           viewer: SampleViewer | None = None) -> str:
    groups: list[tuple[str, int]] = []
    for c in cols:
        if groups and groups[-1][0] == c.group:
            groups[-1] = (c.group, groups[-1][1] + 1)
        else:
            groups.append((c.group, 1))
    best = {c.key: _best(lb, c) for c in cols}
    out = [
        f'<table id="{table_id}"><thead><tr><th class="name" rowspan="2">Row</th><th rowspan="2">Seeds</th>'
    ]
    out += [f'<th class="group" colspan="{n}">{escape(g)}</th>' for g, n in groups]
    out.append("</tr><tr>" + "".join(f"<th>{escape(c.label)}</th>" for c in cols) + "</tr></thead><tbody>")
    previous_kind = None
    for r in lb.rows:
        if skip_empty and not any(c.key in r.cells for c in cols):
            continue  # e.g. the teacher has no training accounting
        cls = r.kind + (" top-rule" if previous_kind not in (None, "method") and r.kind == "method" else "")
        previous_kind = r.kind
        cells = "".join(
            f"<td{' class=best' if best[c.key] == r.row else ''}>"
            f"{_linked(c, r.row, viewer, cell_text(c, r.cells.get(c.key)))}</td>"
            for c in cols
        )
        out.append(
            f'<tr class="{cls}" data-row="{escape(r.row)}"><td class="name">{escape(row_label(lb.answer_flags, r.row))}'
            f"</td><td>{len(r.seeds)}</td>{cells}</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _linked(col: Column, row: str, viewer: SampleViewer | None, text: str) -> str:
    """A score cell's text, linked to the row's items of its benchmark in the sample viewer."""
    href = viewer.link(row, col.benchmark) if viewer and col.benchmark and text else None
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text)


def _simple_table(header: list[str], rows: list[list[str]], table_id: str = "", left: int = 1) -> str:
    tid = f' id="{table_id}"' if table_id else ""
    head = "".join(f'<th class="{"name" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"left" if i < left else ""}">{escape(v)}</td>' for i, v in enumerate(line))
        + "</tr>"
        for line in rows
    )
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bars(lb: Leaderboard, colours: dict[str, str]) -> list[str]:
    charts = []
    for col in lb.headline_columns():
        bars = []
        for r in lb.rows:
            c = r.cells.get(col.key)
            if c is None:
                continue
            low, high = (
                (c.seed_low, c.seed_high)
                if c.seed_high is not None
                else (
                    (c.mean - 1.96 * c.run_se, c.mean + 1.96 * c.run_se)
                    if c.run_se is not None
                    else (c.run_ci_low, c.run_ci_high)
                )
            )
            bars.append(Bar(r.row, c.mean, low, high, colours[r.row]))
        charts.append(bar_chart(f"{col.group}: {col.label}", bars, axis_label=col.label))
    return charts


BUDGET_KEYS = (
    "accounting.flops",
    "accounting.gpu_hours",
    "accounting.student_forward_tokens",
    "accounting.optimizer_steps",
)


def _budget_plot(lb: Leaderboard, colours: dict[str, str]) -> str | None:
    methods = [r for r in lb.rows if r.kind == "method"]
    heads = [c for c in lb.headline_columns() if any(c.key in r.cells for r in methods)]
    budget = next((k for k in BUDGET_KEYS if methods and all(k in r.cells for r in methods)), None)
    if not heads or budget is None:
        return None
    head, bcol = heads[0], lb.column(budget)
    points = [
        Point(
            r.row,
            r.cells[budget].mean,
            r.cells[head.key].mean,
            r.cells[head.key].seed_low,
            r.cells[head.key].seed_high,
            colours[r.row],
        )
        for r in methods
        if head.key in r.cells
    ]
    return scatter_chart(
        f"{head.group} {head.label} vs training budget",
        points,
        f"{bcol.label} (mean per seed)",
        f"{head.group} {head.label}",
    )


def _curve_plots(lb: Leaderboard, colours: dict[str, str]) -> list[str]:
    """One line chart per training curve the rows' methods declare (`Method.train_curve`)."""
    methods = {r.row: r.method for r in lb.rows}
    charts: dict[TrainCurve, list[Series]] = {}
    for row, curves in lb.train_curves.items():
        curve = train_curve(methods.get(row))
        if curve is None:
            continue
        for i, c in enumerate(curves):
            label = row if len(curves) == 1 else f"{row} (seed {c['seed']})"
            charts.setdefault(curve, []).append(
                Series(label, c["steps"], c["values"], colours.get(row, PALETTE[0]), dashed=i > 0)
            )
    return [line_chart(curve.title, series, "optimizer step", curve.axis_label) for curve, series in charts.items()]


def _comparisons(lb: Leaderboard) -> str:
    if not lb.comparisons:
        return '<p class="empty">No method/baseline pair with per-item scores.</p>'
    rows = [
        [
            c["row"],
            c.get("metric_label") or c["benchmark"],
            c["baseline"],
            str(c["n_items"]),
            "" if c.get("diff") is None else f"{c['diff']:+.4f}",
            "" if c.get("ci_low") is None else f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
            format_p(c.get("p_value")),
        ]
        for c in lb.comparisons
    ]
    return _simple_table(
        ["Row", "Metric (per-item)", "Best baseline", "Items", "Diff (per-item score)", "95% CI", "p (two-sided)"],
        rows,
        "comparisons",
    )


def _noise(lb: Leaderboard) -> str:
    def f(v: float | None, d: int = 3) -> str:
        return "" if v is None else f"{v:.{d}f}"

    rows = [
        [
            n["row"],
            n["column"],
            str(n["n_seeds"]),
            f(n["seed_sd"]),
            f(n["seed_ci_half_width"]),
            f(n["run_se_reported"]),
            f(n["item_bootstrap_se"], 4),
        ]
        for n in lb.noise
    ]
    return _simple_table(
        [
            "Row",
            "Metric",
            "Seeds",
            "Seed SD",
            "Seed 95% ±",
            "Run SE (reported)",
            "Item-bootstrap SE (item units)",
        ],
        rows,
        "noise",
        left=2,
    )


def _paper(lb: Leaderboard) -> str:
    ref = lb.paper
    if not ref:
        return ""
    keys, names = paper_layout(lb)
    lines = [[name, *paper_cells(lb, name, keys)] for name in names]
    header = ["Row"] + [
        h for k in keys for h in (f"{lb.column(k).group} {lb.column(k).label} (ours)", "(paper)")
    ]
    srcs = "".join(
        f"<li>[{escape(sid)}] {escape(str(s.get('citation', '')))} {escape(str(s.get('url', '')))}</li>"
        for sid, s in ref["sources"].items()
    )
    return (
        f"<h2>Reproduced vs reported</h2><p class=meta>{escape(ref.get('title', ''))} — "
        f"{escape(ref.get('setting', ''))}. Empty paper cells: no source gives that number.</p>"
        + _simple_table(header, lines, "paper")
        + f"<ul class=meta>{srcs}</ul>"
    )


def _judge_footnote(lb: Leaderboard) -> str:
    footnote = judge_footnote(lb.answer_flags)
    return f'<p class="legend" id="judge-footnote">{escape(footnote)}</p>' if footnote else ""


def _answer_flags(lb: Leaderboard) -> str:
    table = _simple_table(FLAG_HEADER, flag_table(lb.answer_flags), "answer-flags", left=2)
    return "<h2>Answers cut at max_new_tokens, and judges</h2>" + table


def _tuning(lb: Leaderboard) -> list[str]:
    lines = tuning.settings_lines(lb)
    if not lines:
        return []
    parts = ["<h2>Optimizer settings and tuning</h2>", f'<p class="legend">{escape(tuning.LEGEND)}</p>',
             _simple_table(tuning.SETTINGS_HEADER, lines, "optimizer-settings", left=2)]
    for name, sel in lb.tuning.items():
        parts += [f'<h3 class="tuning">Tuning: {escape(tuning.describe_selection(name, sel))}</h3>',
                  _simple_table(tuning.TRIALS_HEADER, tuning.trial_lines(sel), f"tuning-{escape(name)}", left=2),
                  f'<p class="legend">{escape(tuning.cost_line(sel))}</p>']
        parts += [f'<p class="warning">warning: {escape(w)}</p>' for w in sel.get("warnings", [])]
    return parts


def _sources(lb: Leaderboard) -> str:
    models = _simple_table(
        ["Row", "Model(s) that produced the answers", "Seeds"],
        [
            [r.row, ", ".join(r.models), ", ".join("" if s is None else str(s) for s in r.seeds)]
            for r in lb.rows
        ],
        "models",
        left=2,
    )
    benches = _simple_table(
        ["Benchmark", "Data source", "Judge", "Decoding", "Subset", "Notes"],
        [
            [b] + ["; ".join(s.get(k, [])) for k in ("data_source", "judge", "decoding", "subset", "notes")]
            for b, s in sorted(lb.sources.items())
        ],
        "sources",
        left=6,
    )
    return models + benches


def _footer(lb: Leaderboard) -> str:
    exp = lb.experiment
    picked: dict[str, Any] = {"experiment_hash": lb.experiment_hash}
    for key in (
        "teacher",
        "student",
        "prompts",
        "sampling",
        "budget",
        "judge",
        "generation_backend",
        "seeds",
    ):
        if key in exp:
            picked[f"experiment.{key}"] = exp[key]
    rows = [[k, v] for k, v in flatten({"provenance": lb.provenance, **picked})]
    return (
        "<footer><h2>Reproducibility</h2><p class=meta>Package versions, git commit, hardware, chat-template "
        "hashes and data versions as recorded by the run; judge and decoding settings per benchmark are "
        "listed above.</p>" + _simple_table(["Key", "Value"], rows, "provenance", left=2) + "</footer>"
    )


def _heading(lb: Leaderboard, css: str = CSS) -> list[str]:
    return [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>Leaderboard: {escape(lb.experiment_name)}</title><style>{css}</style></head><body>",
        f"<h1>Leaderboard: {escape(lb.experiment_name)}</h1>",
        f'<p class="setting">{escape(lb.setting or "(no setting sentence recorded)")}</p>',
        f'<p class="meta">Experiment hash <code>{escape(lb.experiment_hash)}</code>; compared against the '
        f"best baseline: {escape(', '.join(lb.proposed) or 'none')} (proposed); all other methods are "
        "baselines.</p>",
    ]


def _plots(lb: Leaderboard) -> list[str]:
    colours = colour_map(lb)
    extra = [p for p in (_budget_plot(lb, colours), *_curve_plots(lb, colours)) if p]
    parts = [
        "<h2>Plots</h2>",
        '<p class="legend">Whiskers: 95% interval over seeds; with one seed, ±1.96 × the benchmark\'s own '
        "standard error or its own interval.</p>",
        '<div class="plots">' + "\n".join(_bars(lb, colours) + extra) + "</div>",
    ]
    if not extra:
        parts.append('<p class="empty">No budget accounting or training curve recorded.</p>')
    return parts


def html_text(lb: Leaderboard, samples: dict[str, Any] | None = None) -> str:
    """`samples` (`harness.report.samples.build_samples`): with the sample viewer, linked from the scores."""
    used = [c for c in lb.columns if any(c.key in r.cells for r in lb.rows)]
    scores, acct = [c for c in used if not c.is_accounting], [c for c in used if c.is_accounting]
    viewer = SampleViewer(lb, samples) if samples is not None else None
    parts = _heading(lb, CSS + VIEWER_CSS if viewer else CSS) + [
        "<h2>Scores</h2>",
        _table(lb, scores, "scores", viewer=viewer),
        f'<p class="legend">{escape(LEGEND)} Bold: best method.</p>',
    ]
    parts.append(_judge_footnote(lb))  # the † of the table above, right under it
    if warning := runtime_warning(lb.provenance):  # artifacts made under different thread counts etc.
        parts.append(f'<p class="legend" id="runtime-warning">{escape(warning)}</p>')
    if lb.resolution:  # short: right under the scores; the full per-row table follows the plots
        parts += ["<h2>What this run can resolve</h2>", f'<p class="legend">{escape(RESOLUTION_LEGEND)}</p>',
                  _simple_table(RESOLUTION_HEADER, resolution_lines(lb), "resolution")]
    if acct:
        parts += [
            "<h2>Budget accounting (mean per seed)</h2>",
            _table(lb, acct, "accounting", skip_empty=True),
            '<p class="legend">Matched budgets are checked, not trusted: every method ran under the same '
            "declared budget; these are the measured costs.</p>",
        ]
    parts += _plots(lb)
    parts += _tuning(lb)  # after the plots: the scores table's Tuning column already says tuned or not
    if lb.vs_untrained:
        parts += ["<h2>Versus the untrained student</h2>", f'<p class="legend">{escape(VS_UNTRAINED_LEGEND)}</p>',
                  _simple_table(VS_UNTRAINED_HEADER, vs_untrained_lines(lb), "vs-untrained")]
    parts += [
        "<h2>Paired bootstrap vs the best baseline</h2>",
        '<p class="legend">Per-item scores averaged over seeds, items resampled with replacement '
        "(the same items for both rows), two-sided p-value from the bootstrap distribution of the "
        "difference.</p>",
        _comparisons(lb),
        "<h2>Seed noise vs within-run (item/judge) noise</h2>",
        _noise(lb),
        _paper(lb),
        _answer_flags(lb) if lb.answer_flags else "",
        viewer.html() if viewer else "",
        "<h2>Where every number comes from</h2>",
        _sources(lb),
        _footer(lb),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(lb: Leaderboard, path: Path, samples: dict[str, Any] | None = None) -> Path:
    write_text_atomic(path, html_text(lb, samples))
    return path
