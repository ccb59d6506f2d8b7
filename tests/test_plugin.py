"""The plugin path, end to end: the package in docs/plugins.md is built, installed, listed and trained.

The plugin's files are taken verbatim from the guide's code blocks (each found by its first line, the file
it is: `guide_block`), so the guide cannot drift from what works. It is installed with pip (a real wheel build from its own pyproject, entry points and all) into a
temporary `--target` directory put on the path, rather than into the shared interpreter environment:
the same discovery mechanism, but nothing leaks into other processes using this environment, and nothing
is left behind if the test dies before its teardown.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"


def guide_block(first_line: str) -> str:
    """The guide's one code block whose first line is `first_line` (e.g. "# my-plugin/win_nll.py")."""
    found = [b for b in re.findall(r"```[a-z]*\n(.*?)```", GUIDE.read_text(), flags=re.S)
             if b.split("\n", 1)[0].strip() == first_line]
    assert len(found) == 1, f"docs/plugins.md has {len(found)} code blocks starting with {first_line!r}"
    return found[0]


def install_plugin(files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install a package made of `files` (name -> text) into a fresh --target directory; its path."""
    src = tmp_path_factory.mktemp("plugin-src")
    for name, text in files.items():
        (src / name).write_text(text)
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = install_plugin({"win_nll.py": guide_block("# my-plugin/win_nll.py"),
                           "pyproject.toml": guide_block("# my-plugin/pyproject.toml")}, tmp_path_factory)
    assert list(site.glob("pad_harness_win_nll-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def plugin_on_path(plugin_site: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    # The registry caches its entry-point scan; rescan with the plugin visible, restore afterwards.
    monkeypatch.setattr(METHODS, "_entry_points", None)
    monkeypatch.setattr(METHODS, "_loaded", dict(METHODS._loaded))
    yield plugin_site
    sys.modules.pop("win_nll", None)


@pytest.mark.slow  # two `python -m harness` subprocesses
def test_cli_lists_the_plugin(plugin_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_site), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "harness", "methods"], capture_output=True, text=True, env=env,
                          cwd=plugin_site, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "win_nll" in lines and "MCQ win probability" in lines["win_nll"]
    assert {"pad", "sft", "kd", "dpo", "simpo"} <= set(lines)
    # Without the plugin on the path it is not listed: the listing really comes from the entry point.
    plain = subprocess.run([sys.executable, "-m", "harness", "methods"], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
    assert "win_nll" not in plain.stdout


def test_plugin_loads_and_computes_a_loss(plugin_on_path) -> None:
    from conftest import make_tiny

    from harness.methods.base import PromptGroup, Signal, TrainContext

    cls = METHODS.get("win_nll")
    method = cls({"sharpness": 2.0})
    student = make_tiny("llama")
    group = PromptGroup("p0", [{"role": "user", "content": "hi"}], ["a", "bb", "ccc"],
                        {Signal.MCQ_PREFERENCE: [[0.5, 0.9, 0.8], [0.1, 0.5, 0.3], [0.2, 0.7, 0.5]]})
    ctx = TrainContext(formatter=student.formatter, max_length=64, max_prompt_length=32)
    batch = method.collate(method.build_examples([group], random.Random(0)), ctx)
    out = method.loss(student.model, batch, ctx)
    assert torch.isfinite(out.loss) and batch["student_tokens"] > 0
    # Independent check of the guide's loss: weights (win prob)^2 over per-sequence mean NLLs.
    win = [0.85, 0.2, 0.45]
    nlls = []
    for response in group.responses:
        prompt = student.formatter.prompt_ids(group.messages)
        resp = student.formatter.response_ids(response)
        with torch.no_grad():
            lp = torch.log_softmax(student.model(input_ids=torch.tensor([prompt + resp])).logits[0], -1)
        nlls.append(-sum(lp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(resp)) / len(resp))
    expected = sum(w**2 * n for w, n in zip(win, nlls, strict=True)) / sum(w**2 for w in win)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_plugin_runs_through_the_tiny_preset_next_to_builtins(plugin_on_path, tmp_path) -> None:
    from harness.pipeline import run_experiment

    data = yaml.safe_load((ROOT / "leaderboards" / "tiny.yaml").read_text())
    data["name"] = "tiny-plugin"
    data["methods"] = [{"name": "sft"}, {"name": "dpo"}, {"name": "win_nll", "params": {"sharpness": 2.0}}]
    experiment = tmp_path / "tiny-plugin.yaml"
    experiment.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "run"
    results = run_experiment(experiment, run_dir=run_dir, progress=False)
    rows = {r.row: r for r in results.rows}
    assert {"sft", "dpo", "win_nll", "teacher"} <= set(rows)
    assert rows["win_nll"].accounting.get("optimizer_steps") == rows["sft"].accounting.get("optimizer_steps")
    assert set(rows["win_nll"].benchmarks) == {b["name"] for b in data["benchmarks"]}
    assert "win_nll" in (run_dir / "LEADERBOARD.md").read_text()
