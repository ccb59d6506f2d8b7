"""The HTML report renders in a real browser: headless Chromium (Debian's `chromium` package).

Checks the rendered DOM (tables and SVG plots present after parsing) and that the screenshot is not
blank (decoded with the standard library: zlib + PNG scanline filters, no Pillow needed).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from harness.report import write_reports
from harness.report.sample import sample_results
from harness.results import RunResults

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"),
    pytest.mark.slow,  # a real browser, started per test
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def decode_png_rows(data: bytes, max_rows: int) -> tuple[int, int, list[bytes], int]:
    """(width, height, the first `max_rows` unfiltered scanlines, bytes per pixel) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), f"unexpected PNG format depth={depth} colour={colour}"
            bpp = 3 if colour == 2 else 4
        elif ctype == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(height, max_rows)):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype] if ftype else 0
            line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def rendered_dom(url: str, tmp_path: Path, rows: list[str]) -> str:
    """The DOM Chromium builds from the report, checked to hold a table row for each of `rows`."""
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for row in rows:
        assert f'data-row="{row}"' in dom.stdout, f"row {row!r} missing from the rendered table"
    return dom.stdout


def screenshot_rows(url: str, tmp_path: Path, max_rows: int) -> tuple[int, int, list[bytes], int]:
    """A 1400x2000 screenshot of the report, decoded: (width, height, first scanlines, bytes per pixel)."""
    png = tmp_path / "shot.png"
    shot = _chromium([f"--screenshot={png}", "--window-size=1400,2000", url], tmp_path / "profile-shot")
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    return decode_png_rows(png.read_bytes(), max_rows=max_rows)


def colours_of(rows: list[bytes], bpp: int) -> set[bytes]:
    return {row[i : i + 3] for row in rows[::2] for i in range(0, len(row), bpp * 2)}


def shows_first_method_bar(colours: set[bytes]) -> bool:
    """The first method's bar colour (#1f77b4 at 80% opacity over white) is on screen: the plots rendered."""
    return any(abs(c[0] - 76) < 6 and abs(c[1] - 146) < 6 and abs(c[2] - 195) < 6 for c in colours)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    results = sample_results(methods=("pad", "dpo", "simpo"), seeds=(0, 1, 2))
    html = write_reports(results, tmp_path / "report", paper_dirs=[], n_boot=200)["html"]
    url = html.resolve().as_uri()

    dom = rendered_dom(url, tmp_path, ["teacher", "student (untrained)", "pad", "dpo", "simpo"])
    # 4 headline bar charts (one per benchmark: AlpacaEval 2 leads with LC) + budget scatter + PAD agreement
    assert dom.count("<svg") >= 6
    assert dom.count('class="bar"') >= 5 * 4 and 'class="series"' in dom
    assert 'id="provenance"' in dom

    # The top 1000 px hold the title, the score table and the first plots.
    width, height, rows, bpp = screenshot_rows(url, tmp_path, max_rows=1000)
    assert (width, height) == (1400, 2000)
    colours = colours_of(rows, bpp)
    non_white = sum(
        1 for row in rows[::4] for i in range(0, len(row), bpp * 4) if row[i : i + 3] != b"\xff\xff\xff"
    )
    assert len(colours) > 40, f"only {len(colours)} distinct colours: the page looks blank"
    assert non_white > 0.03 * (width // 4) * (len(rows) // 4)
    assert shows_first_method_bar(colours)


def test_pipeline_report_renders_in_headless_chromium(tiny_preset_run, tmp_path: Path) -> None:
    """The report a real pipeline run writes (tiny preset: every method, every benchmark) renders."""
    exp, results, run_dir = tiny_preset_run
    url = (run_dir / "report.html").resolve().as_uri()
    dom = rendered_dom(url, tmp_path, ["teacher", "student (untrained)", *(m.row_name for m in exp.methods)])
    # Tiny random models score nothing a judge can parse, but PAD trained: its agreement curve is drawn.
    assert dom.count("<svg") >= 1 and 'class="series"' in dom and 'id="provenance"' in dom
    # The sample viewer read the run's own artifacts: AlpacaEval 2's 2 items, every row's answer to each.
    assert dom.count('<article class="sample"') == 2 and '<ul class="missing">' not in dom
    assert dom.count('<section class="answer') == 2 * (2 + len(exp.methods))
    _, _, rows, bpp = screenshot_rows(url, tmp_path, max_rows=800)
    colours = colours_of(rows, bpp)
    assert len(colours) > 20, f"only {len(colours)} distinct colours: the page looks blank"


def test_offline_default_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The report of the offline default itself (leaderboards/smol.yaml), as the README's main job wrote it.
    `.ci/run` runs that job before the tests; elsewhere this test skips until `tox -e demo` has run."""
    import json

    from harness.cli import DEFAULT_EXPERIMENT, REPO_ROOT
    from harness.config import load_experiment
    from harness.pipeline import experiment_hash

    exp = load_experiment(REPO_ROOT / DEFAULT_EXPERIMENT)
    run_dir = exp.run_dir(REPO_ROOT)
    if not (run_dir / "results.json").is_file():
        pytest.skip(f"the offline default has not run here ({run_dir}): `tox -e demo` first")
    if json.loads((run_dir / "results.json").read_text())["experiment_hash"] != experiment_hash(exp):
        pytest.skip(f"{run_dir} holds a run of an older {DEFAULT_EXPERIMENT}: rerun `tox -e demo`")
    url = (run_dir / "report.html").resolve().as_uri()
    rows = ["teacher", "student (untrained)", *(m.row_name for m in exp.methods)]
    dom = rendered_dom(url, tmp_path, rows)
    # AlpacaEval's log-prob judge always answers: its chart has one bar per row. Plus the budget scatter
    # and PAD's agreement curve.
    assert dom.count('class="bar"') >= len(rows) and dom.count("<svg") >= 3
    assert 'class="series"' in dom and 'id="provenance"' in dom
    _, _, rows_px, bpp = screenshot_rows(url, tmp_path, max_rows=2000)  # the whole 2000 px window
    colours = colours_of(rows_px, bpp)
    assert len(colours) > 40, f"only {len(colours)} distinct colours: the page looks blank"
    assert shows_first_method_bar(colours)


def test_tuning_section_renders_in_headless_chromium(tmp_path: Path) -> None:
    """A tuned run's report (tiny models: sft untuned, dpo tuned with 2 trials) shows, rendered, each row's
    tuning status and settings, and the trials table with the selected trial."""
    from test_tuning import parse, tuned

    from harness.pipeline import Pipeline

    run_dir = tmp_path / "run"
    Pipeline(parse(tuned()), run_dir, progress=False).run()
    dom = rendered_dom((run_dir / "report.html").resolve().as_uri(), tmp_path, ["sft", "dpo"])
    assert "Optimizer settings and tuning" in dom
    assert 'id="optimizer-settings"' in dom and 'id="tuning-dpo"' in dom
    settings = dom.split('id="optimizer-settings"', 1)[1].split("</table>", 1)[0]
    assert "tuned (2 trials)" in settings and "untuned" in settings
    trials = dom.split('id="tuning-dpo"', 1)[1].split("</table>", 1)[0]
    assert trials.count("<tr") == 3 and trials.count(">yes<") == 1  # header + 2 trials, one selected


# ------------------------------------------------------------------ the sample viewer
def _viewer_dom(url: str, tmp_path: Path, name: str) -> str:
    """The DOM after the viewer's script ran (`--virtual-time-budget`: scripts and timers are given time)."""
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", url], tmp_path / f"profile-{name}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def _shown(dom: str) -> tuple[list[str], set[str]]:
    """(the items shown, in order; the rows whose answers are shown)."""
    items = re.findall(r'<article class="sample" data-item="([^"]*)"', dom)
    rows = set(re.findall(r'<section class="answer[^"]*" data-row="([^"]*)"', dom))
    return items, rows


def _mean_scores(results: RunResults, row: str, bench: str) -> dict[str, float]:
    """A row's per-item score over its seeds (and over the turns of an MT-Bench question)."""
    scores: dict[str, list[float]] = {}
    for r in results.rows:
        if r.row == row:
            for entry in r.benchmarks[bench].per_item:
                scores.setdefault(str(entry["id"]), []).append(entry["score"])
    return {k: sum(v) / len(v) for k, v in scores.items()}


def test_sample_viewer_shows_items_filters_and_links(tmp_path: Path) -> None:
    """report.html with samples: the first page of items with every row's answer, a score cell's link
    (`#samples=alpaca_eval2&row=pad`: only pad's answers), "pad lost to dpo", and answers shown as text."""
    from helpers.sample_artifacts import write_sample_artifacts

    results = sample_results(methods=("pad", "dpo"), seeds=(0, 1))
    evil = '</script><img src="x" id="injected"><!--'
    write_sample_artifacts(results, tmp_path / "run", answers={("pad", "alpaca_eval2", "a1"): evil})
    results.rows[1].artifacts = {}  # the untrained student's answers are not at hand: the viewer says so
    html = write_reports(results, tmp_path / "run", paper_dirs=[], n_boot=200)["html"]
    url = html.resolve().as_uri()

    dom = _viewer_dom(url, tmp_path, "plain")
    items, rows = _shown(dom)
    assert items == [f"a{i}" for i in range(10)]  # one page of the first benchmark
    assert rows == {"teacher", "pad", "dpo"}
    assert "Items 1–10 of 40 matching" in dom and "No samples here for:" in dom
    assert "student (untrained): no artifact paths recorded" in dom
    assert "<img" not in dom and '&lt;/script&gt;&lt;img src="x" id="injected"&gt;' in dom  # text, not markup
    assert '<a href="#samples=alpaca_eval2&amp;row=pad">' in dom  # the score cells link into the viewer

    items, rows = _shown(_viewer_dom(url + "#samples=alpaca_eval2&row=pad&per=100", tmp_path, "linked"))
    assert items == [f"a{i}" for i in range(40)] and rows == {"pad"}

    pad, dpo = _mean_scores(results, "pad", "alpaca_eval2"), _mean_scores(results, "dpo", "alpaca_eval2")
    lost = [k for k in pad if pad[k] < dpo[k]]
    assert 0 < len(lost) < 40
    dom = _viewer_dom(url + "#samples=alpaca_eval2&a=pad&outcome=lost&b=dpo&per=100", tmp_path, "lost")
    items, rows = _shown(dom)
    assert items == lost and rows == {"pad", "dpo"}
    mt_items, _ = _shown(_viewer_dom(url + "#samples=mt_bench&a=dpo&outcome=won&b=pad", tmp_path, "mt"))
    pad, dpo = _mean_scores(results, "pad", "mt_bench"), _mean_scores(results, "dpo", "mt_bench")
    assert mt_items == [k for k in pad if dpo[k] > pad[k]][:10]
