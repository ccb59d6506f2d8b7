"""docs/python-api.md runs as written, and the API's results frame holds the run's numbers.

Every ```python block of the page is executed in order in one namespace, from a folder where
`leaderboards/` is the repository's (the page's paths are relative to the repository root).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python-api.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "leaderboards").symlink_to(ROOT / "leaderboards")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own examples
    printed = capsys.readouterr().out
    results, frame = namespace["results"], namespace["frame"]
    # The frame holds results.json's numbers, one line per (row, seed, benchmark, metric).
    for row in results.raw.rows:
        for metric, value in row.benchmarks["alpaca_eval2"].metrics.items():
            match = frame[(frame.row == row.row) & (frame.metric == metric)]
            if len(match):
                assert match.value.iloc[0] == pytest.approx(value)
    assert set(frame.row) == {"teacher", "student (untrained)", "sft", "dpo"}
    # AlpacaEval's headline is the LC win rate, which needs data offline runs may lack (then it is no record).
    assert set(frame[frame.headline].metric) <= {"length_controlled_winrate"}
    assert not frame[frame.metric == "win_rate"].headline.any()
    # The variant's plan: dpo retrains, sft does not.
    variant_plan = printed.split("\n")
    assert any("train" in line and "dpo" in line and "to run" in line for line in variant_plan)
    assert namespace["exported"][0].files["alpaca_eval2"]
    assert (tmp_path / "runs" / "api-demo" / "report.html").is_file()


def test_load_takes_a_dict_or_an_experiment_with_the_same_overrides():
    import yaml

    from harness import api

    data = yaml.safe_load((ROOT / "leaderboards" / "tiny.yaml").read_text())
    from_dict = api.load(data, overrides=["budget.learning_rate=2e-5"])
    from_file = api.load(ROOT / "leaderboards" / "tiny.yaml", overrides=["budget.learning_rate=2e-5"])
    again = api.load(from_file)
    assert from_dict.model_dump() == from_file.model_dump() == again.model_dump()
    assert from_dict.budget.learning_rate == 2e-5
