"""Leaderboards and reports: leaderboard.json / .csv / LEADERBOARD.md / report.html from `RunResults`.

Entry points: `write_reports(results, out_dir)` (one run, or a list merged first) and `merge_runs(run_dirs)`;
`pad-harness report RUN_DIR...` runs `merge.run_report`.
"""

from harness.report.leaderboard import Leaderboard, build_leaderboard
from harness.report.merge import MergeError, merge_results, merge_runs, write_reports

__all__ = [
    "Leaderboard",
    "MergeError",
    "build_leaderboard",
    "merge_results",
    "merge_runs",
    "write_reports",
]
