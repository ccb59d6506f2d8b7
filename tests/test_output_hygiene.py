"""What the command line prints: `--quiet` (only the scores table and the report paths), a judging progress
bar with retries and failures, no library log noise unless `--verbose`, errors on a line of their own, and
files created as the umask allows."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.experiments import small_experiment
from judge_server import FakeOpenAIServer  # tests/ is on sys.path (pytest's rootdir conftest)

from harness import console
from harness.cli import main
from harness.config import JudgeSpec
from harness.errors import HarnessError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse
from harness.judges.cache import CachedJudge, JudgeUsage
from harness.judges.factory import build_judge

# One method, one step; its alpaca_eval2 benchmark is judged, so alpaca_eval is imported (and its log noise).
SMALL: dict[str, Any] = small_experiment(
    "quiet", budget={"max_steps": 1, "micro_batch": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0})


def test_a_normal_run_prints_its_plan_a_line_per_stage_and_the_scores_table_only(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output_dir": str(tmp_path / "run")}))
    assert main(["run", str(path)]) == 0
    out, err = capfd.readouterr()
    plan_line = next(line for line in err.splitlines() if line.startswith("plan: "))
    to_run = int(plan_line.split(" cached, ")[1].split(" to run")[0])
    assert to_run > 5 and "estimated" in plan_line and "on cpu" in plan_line  # priced by the estimator
    stage_lines = [line for line in err.splitlines() if line.startswith("[") and " done in " in line]
    assert len(stage_lines) == to_run and stage_lines[-1].startswith(f"[{to_run}/{to_run}]")
    assert all(" · ETA " in line for line in stage_lines[:-1])
    assert "## Scores" in out and "## Where every number comes from" not in out  # not the whole Markdown
    assert main(["run", str(path), "--verbose"]) == 0  # everything cached: no plan line; the whole Markdown
    out, err = capfd.readouterr()
    assert "plan: " not in err and "## Where every number comes from" in out


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"pad-harness {metadata.version('pad-harness')}"


def requests_for(n: int) -> list[JudgeRequest]:
    return [JudgeRequest.chat([{"role": "user", "content": f"Compare A{i} and B{i}."}], max_tokens=8)
            for i in range(n)]


def test_quiet_run_prints_only_the_scores_table_and_report_paths(tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output_dir": str(tmp_path / "run")}))
    assert main(["run", str(path), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert "%|" not in err and "it/s" not in err, err  # no progress bar of ours or of a library
    assert "INFO" not in err and "pkg_resources" not in err, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0] == "## Scores"
    paths = [line.split()[1] for line in lines if line.startswith("  ")]
    assert sorted(Path(p).name for p in paths) == ["LEADERBOARD.md", "leaderboard.csv", "leaderboard.json",
                                                   "report.html"]
    assert all(Path(p).is_file() for p in paths)
    table = [line for line in lines[1:] if not line.startswith("  ")]
    assert all(line.startswith(("|", "†")) for line in table), table  # the table and its judge footnote
    assert {"| teacher †", "| student (untrained) †", "| sft †"} <= {line.split(" |")[0] for line in table}


# -- judging progress --------------------------------------------------------------------------------
def test_judging_shows_done_of_total_with_retries_and_failures(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer() as server:
        server.faults.extend(["500", "timeout"])
        spec = JudgeSpec(backend="openai", model="m", base_url=server.base_url, api_key_env="PAD_TEST_NO_KEY",
                         timeout_s=0.3, max_retries=3, concurrency=1)
        judge = build_judge(spec, tmp_path / "j.sqlite", backoff_base_s=0.005, backoff_max_s=0.02, jitter=0.1)
        judge.complete(requests_for(3), progress="bench judging")
        judge.close()
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("bench judging: 100%") and "3/3" in final, err
    assert "retries=2" in final and "failed=2" in final, final


class SlowRetryingJudge(Judge):
    """Retries once (counted at once) and answers only after `delay_s`: like a server that fails and backs off."""

    def __init__(self, delay_s: float) -> None:
        self.usage = JudgeUsage()
        self.delay_s = delay_s

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "slow-test"}

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        self.usage.failures += 1
        self.usage.retries += 1
        time.sleep(self.delay_s)
        return [JudgeResponse(text="ok") for _ in requests]


def test_retries_show_while_waiting_not_only_when_an_answer_arrives(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    judge = CachedJudge(SlowRetryingJudge(delay_s=1.6), tmp_path / "j.sqlite")
    judge.complete(requests_for(1), progress="slow judging")
    judge.close()
    frames = capsys.readouterr().err.replace("\r", "\n").splitlines()
    waiting = [f for f in frames if "0/1" in f and "retries=1" in f and "failed=1" in f]
    assert waiting, frames  # drawn by the once-a-second refresh, before the answer came


def test_no_bar_when_nothing_is_asked_or_no_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    judge = CachedJudge(SlowRetryingJudge(delay_s=0.0), tmp_path / "j.sqlite")
    judge.complete(requests_for(2))  # no progress label: no bar
    judge.complete(requests_for(2), progress="cached")  # every answer cached: nothing to show
    judge.close()
    assert capsys.readouterr().err == ""


# -- logs ---------------------------------------------------------------------------------------------
def _emit_library_noise() -> None:
    logging.getLogger().setLevel(logging.INFO)  # what alpaca_eval does on import
    logging.info("root info from a library")
    logging.warning("root warning from a library")
    logging.getLogger("some.library").info("named info")
    logging.getLogger("some.library").warning("named warning")
    warnings.warn("pkg_resources is deprecated as an API. See https://setuptools.pypa.io", UserWarning,
                  stacklevel=1)


def _run_noisy(verbose: bool) -> list[str]:
    """The library noise under `console.configured`; returns the warnings that got through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.configured(verbose=verbose):
            _emit_library_noise()
    return [str(w.message) for w in caught]


def test_library_log_lines_are_quiet_unless_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    assert not _run_noisy(verbose=False)
    assert (root.level, root.handlers) == (level, handlers)  # restored: tests call the CLI in-process
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["WARNING some.library: named warning"], err
    assert any("pkg_resources" in w for w in _run_noisy(verbose=True))
    err = capsys.readouterr().err
    for line in ("root info from a library", "root warning from a library", "named info", "named warning"):
        assert line in err, err


# -- errors on a line of their own ------------------------------------------------------------------
def test_an_error_starts_on_a_fresh_line_after_an_open_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from harness.pipeline import Pipeline

    def fail_mid_stage(self: Pipeline) -> None:
        bar = console.bar(total=10, desc="answers", unit="sample")
        bar.update(3)
        raise HarnessError("the judge server went away; rerun to resume")

    monkeypatch.setattr(Pipeline, "run", fail_mid_stage)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output_dir": str(tmp_path / "run")}))
    assert main(["run", str(path)]) == 2
    lines = capsys.readouterr().err.split("\n")
    assert "pad-harness: error: the judge server went away; rerun to resume" in lines, lines


# -- file modes ---------------------------------------------------------------------------------------
@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_reports_and_artifacts_are_created_as_the_umask_allows(tmp_path: Path, umask_022: None) -> None:
    from harness.store import ArtifactStore, write_json_atomic, write_text_atomic

    write_json_atomic(tmp_path / "leaderboard.json", {"a": 1})
    write_text_atomic(tmp_path / "LEADERBOARD.md", "# board\n")
    assert _mode(tmp_path / "leaderboard.json") == 0o644
    assert _mode(tmp_path / "LEADERBOARD.md") == 0o644
    store = ArtifactStore(tmp_path / "run")
    artifact = store.artifact("prompts", "prompts", {"x": 1})
    with store.writing(artifact) as out:
        (out / "prompts.jsonl").write_text("{}\n")
    assert _mode(artifact.path) == 0o755
    assert _mode(artifact.path / "manifest.json") == 0o644
    os.umask(0o077)  # and a stricter umask is honoured too
    write_text_atomic(tmp_path / "private.md", "x")
    assert _mode(tmp_path / "private.md") == 0o600


def test_reading_the_umask_leaves_it_unchanged_under_threads(umask_022: None) -> None:
    from harness.fsmode import current_umask

    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(current_umask())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [0o022] * 8 and current_umask() == 0o022
