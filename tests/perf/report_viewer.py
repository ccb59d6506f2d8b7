"""report.html's sample viewer at the paper plan's size: file size and time to open in headless Chromium.

Run: .tox/tests/bin/python tests/perf/report_viewer.py [--repeats 5] [--keep DIR]
Synthesises 26 rows (teacher, untrained student, 8 methods x 3 seeds) answering AlpacaEval 2 (805 items),
Arena-Hard (500) and MT-Bench (80 questions x 2 turns), answers of 1-2k characters and judge reasoning of
0.8-1.6k (`--gsm8k` adds GSM8K's 1,319 items), writes the reports, then opens report.html and the same report
without the viewer in headless Chromium (`--dump-dom`: parsed, scripts run, first page of samples rendered),
interleaved, each in a fresh profile. Reports sizes and the open-time ratio measured side by side in this run,
never an absolute claim.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: its helpers

from helpers.sample_artifacts import resize_per_item, write_sample_artifacts  # noqa: E402

from harness.report.html import html_text  # noqa: E402
from harness.report.leaderboard import build_leaderboard  # noqa: E402
from harness.report.sample import sample_results  # noqa: E402
from harness.report.samples import build_samples, script_json  # noqa: E402
from harness.results import RunResults  # noqa: E402

METHODS = ("pad", "dpo", "simpo", "sft", "seqkd", "kd", "distillm", "tpo")
PAPER_ITEMS = {"alpaca_eval2": 805, "arena_hard": 500, "mt_bench": 80}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def paper_sized(gsm8k: bool) -> RunResults:
    results = sample_results(methods=METHODS, seeds=(0, 1, 2))
    items = {**PAPER_ITEMS, **({"gsm8k": 1319} if gsm8k else {})}
    for row in results.rows:  # only the benchmarks measured
        row.benchmarks = {b: r for b, r in row.benchmarks.items() if b in items}
    results.experiment["benchmarks"] = [b for b in results.experiment["benchmarks"] if b["name"] in items]
    resize_per_item(results, items)
    return results


def open_seconds(chromium: str, url: str, profile: Path) -> tuple[float, str]:
    shutil.rmtree(profile, ignore_errors=True)
    start = time.perf_counter()
    out = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=300, check=True)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gsm8k", action="store_true", help="also GSM8K's 1,319 items")
    parser.add_argument("--keep", type=Path, default=None, help="write the run dir here (default: a temp dir)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not installed (apt-get install -y chromium)")
    run_dir = args.keep or Path(tempfile.mkdtemp(prefix="report-viewer-"))
    results = paper_sized(args.gsm8k)
    start = time.perf_counter()
    write_sample_artifacts(results, run_dir, answer_chars=(1000, 2000), judge_chars=(800, 1600), cut_rate=0.05)
    print(f"{len(results.rows)} rows; artifacts written in {time.perf_counter() - start:.1f} s under {run_dir}")

    lb = build_leaderboard(results, n_boot=200)
    start = time.perf_counter()
    samples = build_samples(results, [run_dir])
    built = time.perf_counter() - start
    items = sum(len(b["items"]) for b in samples["benchmarks"])
    embedded = len(script_json(samples).encode())
    start = time.perf_counter()
    with_viewer = html_text(lb, samples)
    rendered = time.perf_counter() - start
    pages = {"viewer": run_dir / "report.html", "plain": run_dir / "report-without-viewer.html"}
    pages["viewer"].write_text(with_viewer)
    pages["plain"].write_text(html_text(lb))
    cap = samples["text_cap"]
    print(f"{items} items; samples built in {built:.1f} s, HTML in {rendered:.1f} s; embedded JSON "
          f"{embedded / 1e6:.1f} MB; texts " + (f"cut to {cap:,} chars (head + tail)" if cap else "uncut"))
    for path in pages.values():
        print(f"  {path.name}: {path.stat().st_size / 1e6:.2f} MB")

    urls = {"plain": pages["plain"].as_uri(), "viewer": pages["viewer"].as_uri(),
            "viewer, linked 'pad lost to sft'": pages["viewer"].as_uri() + "#samples=arena_hard&a=pad&outcome=lost&b=sft"}
    times: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(args.repeats):  # interleaved, so every page sees the same machine state
        for name, url in urls.items():
            seconds, dom = open_seconds(chromium, url, run_dir / "profile")
            assert name == "plain" or '<article class="sample"' in dom, f"{name}: no sample rendered"
            times[name].append(seconds)
    base = statistics.median(times["plain"])
    print(f"open time in headless Chromium (--dump-dom wall time incl. browser start; median of {args.repeats}):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:34s} {median:6.2f} s  ratio {median / base:5.2f}x  (+{median - base:.2f} s)")
    if args.keep is None:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
