"""Dependency-free inline SVG charts for the HTML report (no matplotlib, no JavaScript, no fonts to fetch).

Three chart shapes are enough for the report: horizontal bars with interval whiskers, a scatter with
vertical error bars (score against training budget), and lines (a method's training curve over steps).
Every piece of text is escaped; the output is a string that goes straight into the HTML.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
KIND_COLOURS = {"teacher": "#555555", "student": "#a0a0a0", "external": "#b07d2b"}
FONT = "font-family:Helvetica,Arial,sans-serif;font-size:11px"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    low: float | None = None
    high: float | None = None
    colour: str = PALETTE[0]


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    low: float | None = None
    high: float | None = None
    colour: str = PALETTE[0]


@dataclass(frozen=True)
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    colour: str = PALETTE[0]
    dashed: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    # Ticks run from the last multiple of `step` at or below `lo` to the first at or above `hi`, so the
    # whole data range (whiskers included) lies inside the axis.
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, max(last, first + 1) + 1)]


def _fmt_tick(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.2g}"
    return f"{v:g}"


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{width / 2:.1f}" y="14" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
    ]


def bar_chart(title: str, bars: list[Bar], width: int = 440, axis_label: str = "") -> str:
    label_w, row_h, top, bottom = 150, 22, 24, 34
    height = top + row_h * len(bars) + bottom
    plot_w = width - label_w - 20
    values = [v for b in bars for v in (b.value, b.low, b.high) if v is not None]
    lo = min(0.0, *values) if values else 0.0
    hi = max(values) if values else 1.0
    ticks = nice_ticks(lo, hi * 1.05 if hi > 0 else hi + 1)
    lo, hi = ticks[0], ticks[-1]

    def sx(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    out = _svg_open(width, height, title)
    axis_y = top + row_h * len(bars)
    for t in ticks:
        out.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{axis_y}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{axis_y + 13}" text-anchor="middle">{_fmt_tick(t)}</text>')
    for i, b in enumerate(bars):
        y = top + i * row_h
        x0, x1 = sx(max(lo, 0.0)), sx(b.value)
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(b.label)}</text>')
        out.append(
            f'<rect class="bar" x="{min(x0, x1):.1f}" y="{y + 4}" width="{abs(x1 - x0):.1f}" '
            f'height="{row_h - 8}" fill="{b.colour}" fill-opacity="0.8"><title>{escape(b.label)}: '
            f"{b.value:.4g}</title></rect>"
        )
        if b.low is not None and b.high is not None:
            cy = y + row_h / 2
            out.append(
                f'<path class="whisker" d="M{sx(b.low):.1f},{cy:.1f}H{sx(b.high):.1f}'
                f'M{sx(b.low):.1f},{cy - 5:.1f}V{cy + 5:.1f}M{sx(b.high):.1f},{cy - 5:.1f}V{cy + 5:.1f}" '
                f'stroke="#111" stroke-width="1.3" fill="none"/>'
            )
    out.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{width - 20}" y2="{axis_y}" stroke="#333"/>')
    if axis_label:
        out.append(
            f'<text x="{label_w + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">'
            f"{escape(axis_label)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


Scale = Callable[[float], float]


def _axes(
    out: list[str],
    xt: list[float],
    yt: list[float],
    sx: Scale,
    sy: Scale,
    box: tuple[float, float, float, float],
    x_label: str,
    y_label: str,
    x_fmt: Callable[[float], str] = _fmt_tick,
) -> None:
    left, top, right, bottom = box
    for t in yt:
        out.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
    for t in xt:
        out.append(f'<text x="{sx(t):.1f}" y="{bottom + 14}" text-anchor="middle">{x_fmt(t)}</text>')
    out.append(f'<path d="M{left},{top}V{bottom}H{right}" stroke="#333" fill="none"/>')
    out.append(
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 30}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text transform="translate(12,{(top + bottom) / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )


def scatter_chart(
    title: str, points: list[Point], x_label: str, y_label: str, width: int = 440, height: int = 300
) -> str:
    left, top, right, bottom = 58, 26, width - 16, height - 44
    xs = [p.x for p in points] or [0.0, 1.0]
    ys = [v for p in points for v in (p.y, p.low, p.high) if v is not None] or [0.0, 1.0]
    # Budgets span orders of magnitude across settings; a log axis keeps them readable when they do.
    log_x = min(xs) > 0 and max(xs) / min(xs) > 20
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xlo, xhi = fx(min(xs)), fx(max(xs))
    pad = (xhi - xlo) * 0.1 or abs(xlo) * 0.1 or 1.0
    xt = nice_ticks(xlo - pad, xhi + pad)
    yt = nice_ticks(min(ys) - (max(ys) - min(ys)) * 0.1, max(ys) + (max(ys) - min(ys)) * 0.1 + 1e-9)

    def sx(v: float) -> float:
        return left + (v - xt[0]) / (xt[-1] - xt[0]) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - yt[0]) / (yt[-1] - yt[0]) * (bottom - top)

    out = _svg_open(width, height, title)
    _axes(
        out,
        xt,
        yt,
        sx,
        sy,
        (left, top, right, bottom),
        x_label + (" (log scale)" if log_x else ""),
        y_label,
        x_fmt=(lambda t: _fmt_tick(10**t)) if log_x else _fmt_tick,
    )
    for p in points:
        cx, cy = sx(fx(p.x)), sy(p.y)
        if p.low is not None and p.high is not None:
            out.append(
                f'<path d="M{cx:.1f},{sy(p.low):.1f}V{sy(p.high):.1f}" stroke="{p.colour}" '
                f'stroke-width="1.3"/>'
            )
        out.append(
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{p.colour}">'
            f"<title>{escape(p.label)}: {p.y:.4g} at {p.x:.4g}</title></circle>"
        )
        out.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}">{escape(p.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    title: str,
    series: list[Series],
    x_label: str,
    y_label: str,
    width: int = 440,
    height: int = 300,
    y_range: tuple[float, float] | None = None,
) -> str:
    left, top, right, bottom = 58, 26, width - 130, height - 44
    xs = [x for s in series for x in s.xs] or [0.0, 1.0]
    ys = [y for s in series for y in s.ys] or [0.0, 1.0]
    xt = nice_ticks(min(xs), max(xs))
    yt = nice_ticks(*(y_range or (min(ys), max(ys) + 1e-9)))

    def sx(v: float) -> float:
        return left + (v - xt[0]) / (xt[-1] - xt[0]) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - yt[0]) / (yt[-1] - yt[0]) * (bottom - top)

    out = _svg_open(width, height, title)
    _axes(out, xt, yt, sx, sy, (left, top, right, bottom), x_label, y_label)
    for i, s in enumerate(series):
        pts = zip(s.xs, s.ys, strict=True)
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        out.append(
            f'<path class="series" d="{d}" stroke="{s.colour}" stroke-width="1.8" fill="none"{dash}>'
            f"<title>{escape(s.label)}</title></path>"
        )
        ly = top + 8 + 16 * i
        out.append(
            f'<line x1="{right + 10}" y1="{ly}" x2="{right + 30}" y2="{ly}" stroke="{s.colour}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{right + 34}" y="{ly + 4}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
