"""The benchmark plugin of docs/plugins.md, end to end, the way a user runs it.

Its two files are taken verbatim from the guide, pip-installed into a temporary --target directory (its entry
point is then what the registry finds, as in test_plugin.py) and named in an experiment with the guide's own
`benchmarks:` snippet, whose `judge:` is pointed at an OpenAI-compatible server on loopback. The pipeline
then answers the three questions with every row (tiny models), sends the answers to that judge over HTTP,
scores the verdicts and writes the reports. The judge here rates like a real one ("... [[k]]", k from the
prompt's hash; no verdict for one question); the expected prompts and scores are computed in this test from
the rows' answers and from what the server answered.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.experiments import small_experiment
from helpers.tiny_models import draw_wider
from judge_server import FakeOpenAIServer
from test_plugin import guide_block, install_plugin

from harness.config import parse_experiment
from harness.registry import BENCHMARKS
from harness.store import read_jsonl

KEY_ENV = "PAD_HARNESS_TEST_JUDGE_KEY"
VERDICT = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")  # this test's own reading of a rating


class RatingJudgeServer(FakeOpenAIServer):
    """Answers every chat completion like a rating judge; remembers its reply to each prompt."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[str, str] = {}

    def completion(self, body: dict[str, Any], drop_logprobs: bool = False) -> dict[str, Any]:
        reply = super().completion(body, drop_logprobs)
        prompt = body["messages"][-1]["content"]
        rating = 1 + int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10
        text = "I cannot tell." if "hexagon" in prompt else f"Close enough to the reference. Rating: [[{rating}]]"
        reply["choices"][0]["message"]["content"] = text
        with self._lock:
            self.replies[prompt] = text
        return reply


def rating_of(reply: str) -> float | None:
    match = VERDICT.search(reply)
    return float(match.group(1)) if match else None


@pytest.fixture(scope="module")
def benchmark_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = install_plugin({"judged_qa.py": guide_block("# my-benchmark/judged_qa.py"),
                           "pyproject.toml": guide_block("# my-benchmark/pyproject.toml")}, tmp_path_factory)
    assert list(site.glob("pad_harness_judged_qa-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def benchmark_on_path(benchmark_site: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(benchmark_site))
    # The registry caches its entry-point scan; rescan with the plugin visible, restore afterwards.
    monkeypatch.setattr(BENCHMARKS, "_entry_points", None)
    monkeypatch.setattr(BENCHMARKS, "_loaded", dict(BENCHMARKS._loaded))
    yield benchmark_site
    sys.modules.pop("judged_qa", None)


@pytest.fixture
def answering_tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny random models answer "\n" over and over (stripped: nothing); with their weights re-drawn wider
    (seeded by the model's seed) they answer varied bytes, different per row."""
    draw_wider(monkeypatch)


# The whole pipeline (samples, one training step, three rows answering, judged over HTTP): about 10 s here.
@pytest.mark.usefixtures("answering_tiny_models")
def test_guide_benchmark_runs_judged_over_http_and_reaches_the_report(benchmark_on_path: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.pipeline import run_experiment

    assert "judged_qa" in BENCHMARKS and BENCHMARKS.describe("judged_qa").startswith("Judged QA")
    plugin = sys.modules[BENCHMARKS.get("judged_qa").__module__]  # the installed guide code
    assert Path(plugin.__file__).is_relative_to(benchmark_on_path)
    snippet = yaml.safe_load(guide_block("# experiment.yaml (excerpt): benchmarks"))
    spec = next(b for b in snippet["benchmarks"] if b["name"] == "judged_qa")
    assert spec["judge"]["model"] == plugin.JudgedQA().official_judge()
    monkeypatch.delenv(KEY_ENV, raising=False)  # loopback: no key sent
    with RatingJudgeServer() as server:
        spec["judge"].update(base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=10, max_retries=1)
        data = small_experiment("judged-qa", prompts=2, budget={"max_steps": 1, "epochs": None, "micro_batch": 2})
        data["benchmarks"] = [spec]  # the guide's entry: answers of 64 tokens, judge_max_tokens 256
        run_dir = tmp_path / "run"
        results = run_experiment(parse_experiment(data, "test"), run_dir=run_dir, progress=False)
        bodies, replies = list(server.bodies), dict(server.replies)

    # The rows' answers (each row's answers.jsonl, found by its items' ids) and what the judge must have seen.
    answer_files = [records for path in sorted(run_dir.rglob("answers.jsonl"))
                    if (records := read_jsonl(path)) and all(r["id"].startswith("qa/") for r in records)]
    rows = [r for r in results.rows if "judged_qa" in r.benchmarks]
    assert {r.row for r in rows} >= {"teacher", "sft"} and len(answer_files) == len(rows)
    assert all(a["output"] for answers in answer_files for a in answers)
    items = {item["id"]: item for item in plugin.ITEMS}
    expected_prompts = [[plugin.JUDGE_PROMPT.format(question=items[a["id"]]["question"],
                                                    reference=items[a["id"]]["reference"], answer=a["output"])
                         for a in answers] for answers in answer_files]
    assert set(replies) == {p for prompts in expected_prompts for p in prompts}
    assert len(bodies) == len(replies) > 3  # each prompt asked once (the judge cache); the rows' answers differ
    assert {b["model"] for b in bodies} == {"gpt-4o-mini"} and {b["max_tokens"] for b in bodies} == {256}
    for prompt in replies:
        assert "[Question]" in prompt and any(item["question"] in prompt and item["reference"] in prompt
                                              for item in plugin.ITEMS)

    # Scores from the server's verdicts: per item (each row's are one answers file's), and per row the mean of
    # the ratings with its standard error.
    expected_rows = sorted(tuple(rating_of(replies[p]) for p in prompts) for prompts in expected_prompts)
    assert sorted(tuple(i["score"] for i in r.benchmarks["judged_qa"].per_item) for r in rows) == expected_rows
    for row in rows:
        result = row.benchmarks["judged_qa"]
        ratings = [i["score"] for i in result.per_item if i["score"] is not None]  # = the verdicts, as above
        assert len(ratings) == 2 and result.metrics["no_verdict"] == 1  # the hexagon has no verdict
        mean = sum(ratings) / len(ratings)
        stderr = math.sqrt(sum((r - mean) ** 2 for r in ratings) / (len(ratings) - 1) / len(ratings))
        assert result.metrics["rating"] == pytest.approx(mean)
        assert result.metrics["rating_stderr"] == pytest.approx(stderr)
        assert result.judge_is_official is True and result.official_judge == "gpt-4o-mini"
        assert result.source == "judged_qa.py (inline)" and result.answers == 3

    # The report's columns are the benchmark's own (`columns()`, under its `title`).
    md = (run_dir / "LEADERBOARD.md").read_text()
    assert "Judged QA" in md and "Rating" in md and "No verdict" in md and "†" not in md
    table = list(csv.DictReader(io.StringIO((run_dir / "leaderboard.csv").read_text())))
    by_row = {r["row"]: r for r in table}
    for row in rows:
        rating = row.benchmarks["judged_qa"].metrics["rating"]
        assert float(by_row[row.row]["judged_qa.rating"]) == pytest.approx(rating)
        assert by_row[row.row]["judged_qa.judge_is_official"] == "true"
