"""The tuning section of every report: how each row's optimizer settings were chosen.

Per row: "tuned (K trials)" or "untuned", and the settings it trained with. Per tuned method: every
trial's settings and dev score (with its 95% interval), the selected trial, a warning where the selected
value sits at the edge of its grid, and what the search cost (trials x training tokens, FLOPs, wall time).
Plain rows of strings, rendered by the Markdown, HTML and CSV writers alike.
"""

from __future__ import annotations

from typing import Any

from harness.config import OPTIMIZER_FIELDS

SETTINGS_HEADER = ["Row", "Tuning", *OPTIMIZER_FIELDS]
TRIALS_HEADER = ["Trial", "Settings", "Dev score", "95% CI", "Selected", "Train tokens", "Train FLOPs", "Wall s"]
LEGEND = ("Optimizer settings are each method's own (the budget's defaults where a method sets none); what is "
          "matched (steps, batch, lengths, token and FLOP caps) is the same for every row. A tuned method had "
          "the same number of trials as every other tuned method, each trained under the budget with the first "
          "seed and scored on the DEV split of the benchmark named below (disjoint from training prompts and "
          "test items); its test rows are the selected trial's settings trained with every seed.")


def tuning_status(runs: list[Any]) -> str:
    """What a leaderboard row says of how its settings were chosen."""
    info = runs[0].tuning if runs else {}
    if runs and runs[0].kind == "external":  # evaluated here, trained elsewhere: no budget of this run
        return "external (not trained here)"
    if runs and runs[0].kind != "method":
        return ""
    if info.get("tuned"):
        return f"tuned ({info.get('trials')} trials)"
    return "untuned"


def _g(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def settings_lines(lb: Any) -> list[list[str]]:
    return [[r.row, r.tuning, *(_g(r.optimizer.get(k)) for k in OPTIMIZER_FIELDS)]
            for r in lb.rows if r.kind == "method"]


def describe_selection(name: str, sel: dict[str, Any]) -> str:
    select_on = sel.get("select_on") or {}
    direction = "higher" if sel.get("higher_is_better", True) else "lower"
    return (f"{name}: {len(sel.get('trials', []))} trials, selected on {sel.get('dev_benchmark')} "
            f"{sel.get('metric')} ({direction} is better; dev items: {select_on.get('subset') or 'default'}) - "
            f"{sel.get('dev_source', '')}")


def trial_lines(sel: dict[str, Any]) -> list[list[str]]:
    lines = []
    for t in sel.get("trials", []):
        settings = ", ".join(f"{k}={_g(v)}" for k, v in t["settings"].items())
        ci = t.get("ci95")
        cost = t.get("cost") or {}
        wall = [cost.get("train_wall_time_s"), cost.get("dev_wall_time_s")]
        lines.append([str(t["trial"] + 1), settings, _g(t.get("value")),
                      f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "", "yes" if t["trial"] == sel.get("selected") else "",
                      _g(cost.get("train_student_tokens")), _g(cost.get("train_flops")),
                      _g(sum(w for w in wall if isinstance(w, (int, float))))])
    return lines


def cost_line(sel: dict[str, Any]) -> str:
    c = sel.get("search_cost") or {}
    return (f"Search budget: {c.get('trials')} trials = {_g(c.get('train_student_tokens'))} student training "
            f"tokens, {_g(c.get('train_flops'))} training FLOPs, {_g(c.get('train_wall_time_s'))} s training + "
            f"{_g(c.get('dev_wall_time_s'))} s dev evaluation ({_g(c.get('dev_generation_tokens'))} tokens generated)")


def csv_fields(row: Any) -> list[str]:
    """The CSV's tuning columns of one leaderboard row (`CSV_HEADER`)."""
    return [row.tuning, *(_g(row.optimizer.get(k)) for k in OPTIMIZER_FIELDS)]


CSV_HEADER = ["tuning", *(f"optimizer.{k}" for k in OPTIMIZER_FIELDS)]
