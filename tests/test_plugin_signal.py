"""The signal plugin of docs/plugins.md ("Add a signal"), end to end, the way a user runs it.

Its two files are taken verbatim from the guide, pip-installed into a temporary --target directory (its two
entry points, `harness.signals` and `harness.methods`, are then what the registries find, as in
test_plugin.py), and its method is named in an experiment with the guide's own `methods:` snippet. The
pipeline then samples, computes the signal in chunks, trains the method on it and evaluates the row. This test
recomputes the teacher's entropies independently (one unpadded sequence at a time, float64 softmax) from the
samples the run stored, checks the artifact holds them, that the first training step's loss is the
entropy-weighted NLL of the initial student (and not the unweighted one), that the teacher work is charged to
the method, and that a second run with another temperature re-trains on the cached signal without computing it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers.experiments import small_experiment
from helpers.tiny_models import draw_wider
from test_plugin import guide_block, install_plugin

from harness.config import parse_experiment
from harness.registry import METHODS, SIGNALS
from harness.store import read_jsonl

MAX_LENGTH, MAX_PROMPT = 64, 48  # small_experiment's budget


@pytest.fixture(scope="module")
def signal_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = install_plugin({"teacher_entropy.py": guide_block("# my-signal/teacher_entropy.py"),
                           "pyproject.toml": guide_block("# my-signal/pyproject.toml")}, tmp_path_factory)
    assert list(site.glob("pad_harness_teacher_entropy-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def signal_on_path(signal_site: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(signal_site))
    # The registries cache their entry-point scans; rescan with the plugin visible, restore afterwards.
    for registry in (METHODS, SIGNALS):
        monkeypatch.setattr(registry, "_entry_points", None)
        monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    yield signal_site
    sys.modules.pop("teacher_entropy", None)


@pytest.fixture
def opinionated_tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random-init tiny models are nearly uniform (every entropy ~ log V, so every weight alike); with their
    weights re-drawn wider (seeded by the model's seed) the teacher's entropies differ from response to
    response, so a wrong weighting shows in the loss."""
    draw_wider(monkeypatch)


def encoded(loaded: Any, messages: list[dict[str, str]], response: str, done: bool) -> tuple[list[int], list[int]]:
    """(prompt, response) ids as this model sees them, cut like training cuts them (prompt from the left to
    max_prompt_length, then the response to fit max_length)."""
    prompt = loaded.formatter.prompt_ids(messages)[-MAX_PROMPT:]
    resp = loaded.formatter.response_ids(response, finished=done)
    return prompt, resp[: max(1, MAX_LENGTH - len(prompt))]


def next_token_distributions(loaded: Any, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Log-probs [len(response), V] (float64) of the distributions predicting each response token."""
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([prompt + response])).logits[0].double()
    return torch.log_softmax(logits, -1)[len(prompt) - 1 : len(prompt) + len(response) - 1]


def reference_entropies(teacher: Any, samples: list[dict[str, Any]]) -> tuple[list[list[float]], int]:
    """Per prompt, per response: the teacher's mean next-token entropy; and the tokens run through it."""
    values, tokens = [], 0
    for rec in samples:
        row = []
        for response, done in zip(rec["responses"], rec.get("finished") or [True] * len(rec["responses"]),
                                  strict=True):
            prompt, resp = encoded(teacher, rec["messages"], response, done)
            logp = next_token_distributions(teacher, prompt, resp)
            row.append(float(-(logp.exp() * logp).sum(-1).mean()))
            tokens += len(prompt) + len(resp)
        values.append(row)
    return values, tokens


def sequence_nlls(student: Any, samples: list[dict[str, Any]]) -> list[float]:
    """The initial student's mean NLL of each response, flattened in sample order."""
    out = []
    for rec in samples:
        for response, done in zip(rec["responses"], rec.get("finished") or [True] * len(rec["responses"]),
                                  strict=True):
            prompt, resp = encoded(student, rec["messages"], response, done)
            logp = next_token_distributions(student, prompt, resp)
            out.append(-sum(float(logp[t, tok]) for t, tok in enumerate(resp)) / len(resp))
    return out


def weighted(nlls: list[float], entropies: list[float], temperature: float) -> float:
    weights = [math.exp(-h / temperature) for h in entropies]
    return sum(w * n for w, n in zip(weights, nlls, strict=True)) / sum(weights)


def one_dir(pattern: Path) -> Path:
    found = sorted(pattern.parent.glob(pattern.name))
    assert len(found) == 1, f"{pattern}: {found}"
    return found[0]


# Two pipeline runs on tiny models (2 prompts x 2 samples, one training step each): about 10 s here.
@pytest.mark.usefixtures("opinionated_tiny_models")
def test_guide_signal_is_computed_once_and_trains_its_method(signal_on_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.models.sources import load_model
    from harness.pipeline import Pipeline, run_experiment

    assert "teacher_entropy" in SIGNALS and "confident_sft" in METHODS
    source_cls = SIGNALS.get("teacher_entropy")
    plugin = sys.modules[source_cls.__module__]  # the installed guide code
    assert Path(plugin.__file__).is_relative_to(signal_on_path)
    assert METHODS.get("confident_sft").__module__ == plugin.__name__

    calls: list[int] = []  # groups per compute call (one call per chunk)
    compute = source_cls.compute

    def counted(self: Any, ctx: Any, out: Path) -> dict[str, Any]:
        calls.append(len(ctx.groups()))
        return compute(self, ctx, out)

    monkeypatch.setattr(source_cls, "compute", counted)

    snippet = yaml.safe_load(guide_block("# experiment.yaml (excerpt): a method reading its own signal"))
    spec = next(m for m in snippet["methods"] if m["name"] == "confident_sft")
    temperature = spec["params"]["temperature"]

    def experiment(method: dict[str, Any]) -> Any:
        # One optimizer step over both prompts (one micro-batch): its loss is over every sample. Chunks of one
        # prompt: the signal is computed in two parts and merged by the source's (default) merge.
        data = small_experiment("teacher-entropy", prompts=2, samples=2, methods=[method],
                                budget={"max_steps": 1, "epochs": None, "effective_batch": 2, "micro_batch": 2},
                                data_parallel={"chunk": 1})
        return parse_experiment(data, "test")

    run_dir = tmp_path / "run"
    exp = experiment(spec)
    results = run_experiment(exp, run_dir=run_dir, progress=False)
    artifacts = run_dir / "artifacts"

    # The signal's artifact holds the teacher's entropies of the stored samples, computed here independently.
    samples = read_jsonl(one_dir(artifacts / "samples" / "*") / "samples.jsonl")
    assert len(samples) == 2 and calls == [1, 1]
    signal_dir = one_dir(artifacts / "signal" / "teacher_entropy-*")
    stored = json.loads((signal_dir / "values.json").read_text())["entropy"]
    teacher = load_model(exp.teacher)
    expected, teacher_tokens = reference_entropies(teacher, samples)
    assert [len(row) for row in stored] == [len(row) for row in expected] == [2, 2]
    for got, want in zip(stored, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert source_cls().load("teacher_entropy", signal_dir) == stored
    flat = [h for row in expected for h in row]
    assert max(flat) - min(flat) > 0.05  # the weights differ: the loss checks below can fail

    # The method trained on them: step 1's loss is the entropy-weighted mean NLL of the initial student.
    rows = {r.row: r for r in results.rows}
    row = rows["confident_sft"]
    step = row.train_log[0]
    assert step["prompts_seen"] == 2
    nlls = sequence_nlls(load_model(exp.student), samples)
    assert step["loss"] == pytest.approx(weighted(nlls, flat, temperature), rel=1e-4)
    assert abs(step["loss"] - sum(nlls) / len(nlls)) > 1e-3 * abs(step["loss"])  # unweighted: not this
    assert step["mean_weight"] == pytest.approx(sum(math.exp(-h / temperature) for h in flat) / len(flat),
                                                rel=1e-4)
    train_dir = one_dir(artifacts / "train" / "confident_sft-seed*")
    assert (train_dir / "model.safetensors").is_file()
    assert json.loads((signal_dir / "manifest.json").read_text())  # committed
    # The teacher's work for the signal is charged to the method (the matched budget counts it).
    assert row.accounting["teacher_forward_tokens"] == teacher_tokens

    # A second run with another temperature re-trains on the cached signal: no compute, artifact untouched.
    stamp = (signal_dir / "manifest.json").stat().st_mtime_ns
    calls.clear()
    hotter = {**spec, "params": {"temperature": 2 * temperature}}
    plan = Pipeline(experiment(hotter), run_dir, progress=False).describe_plan()
    assert any(line.split()[:3] == ["cached", "signal", "teacher_entropy"] for line in plan.splitlines()), plan
    again = run_experiment(experiment(hotter), run_dir=run_dir, progress=False)
    assert calls == []
    assert one_dir(artifacts / "signal" / "teacher_entropy-*") == signal_dir
    assert (signal_dir / "manifest.json").stat().st_mtime_ns == stamp
    assert len(list((artifacts / "train").glob("confident_sft-seed*"))) == 2  # a new training, same signal
    step = next(r for r in again.rows if r.row == "confident_sft").train_log[0]
    assert step["loss"] == pytest.approx(weighted(nlls, flat, 2 * temperature), rel=1e-4)
