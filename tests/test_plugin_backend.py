"""The generation-backend plugin of docs/plugins.md ("Add a generation backend"), end to end.

Its two files are taken verbatim from the guide, pip-installed into a temporary --target directory (its entry
point is then what the registry finds, as in test_plugin.py). On its own, it must answer exactly as the `hf`
backend (greedy and sampled, n samples, per-request limits) whatever its batches, which must keep to its token
budget. In a run, named with the guide's own `generation_backend:` snippet after an `hf` run in the same run
directory, it re-answers every row with the same answers and the same generated-token accounting, reusing the
samples and the trained model; its non-result param re-answers nothing, its result param (`max_answer_tokens`)
re-answers with shorter answers; a bad param is one line at `pad-harness validate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.experiments import small_experiment
from helpers.tiny_models import draw_wider
from test_plugin import guide_block, install_plugin

from harness.cli import main
from harness.config import parse_experiment
from harness.models.base import GenerationRequest, SamplingParams
from harness.models.hf_generator import HFGenerator
from harness.registry import BACKENDS
from harness.store import read_jsonl


@pytest.fixture(scope="module")
def backend_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = install_plugin({"token_batches.py": guide_block("# my-backend/token_batches.py"),
                           "pyproject.toml": guide_block("# my-backend/pyproject.toml")}, tmp_path_factory)
    assert list(site.glob("pad_harness_token_batches-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def backend_on_path(backend_site: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(backend_site))
    # The registry caches its entry-point scan; rescan with the plugin visible, restore afterwards.
    monkeypatch.setattr(BACKENDS, "_entry_points", None)
    monkeypatch.setattr(BACKENDS, "_loaded", dict(BACKENDS._loaded))
    yield backend_site
    sys.modules.pop("token_batches", None)


def guide_backend() -> dict[str, Any]:
    """The guide's `generation_backend:` and `backends:` entries."""
    return yaml.safe_load(guide_block("# experiment.yaml (excerpt): generation backend"))


def test_cli_lists_the_guide_backend(backend_on_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"hf", "vllm", "token_batches"} <= set(lines)
    assert "batched by a token budget instead of a request count" in lines["token_batches"]
    plugin = sys.modules[BACKENDS.get("token_batches").__module__]
    assert Path(plugin.__file__).is_relative_to(backend_on_path)  # the installed guide code


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_guide_backend_answers_as_hf_in_batches_within_its_budget(backend_on_path: Path, temperature: float) -> None:
    from conftest import make_tiny

    loaded = make_tiny("llama")
    # Prompts of several lengths, 1 or 2 samples, some with their own answer limit (as a row's benchmarks share
    # a call).
    requests = [GenerationRequest(loaded.formatter.prompt_ids([{"role": "user", "content": "ab " * k}]), seed=k,
                                  n=1 + k % 2, max_new_tokens=3 if k % 3 == 0 else None) for k in range(1, 9)]
    params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=6)
    hf = HFGenerator(loaded, batch_size=16)
    expected = hf.generate(requests, params)
    cls = BACKENDS.get("token_batches")
    budget = 3 * (len(requests[-1].prompt_ids) + 6)  # about three rows of the longest prompt
    backend = cls(loaded, batch_size=16, **cls.Params.model_validate({"max_batch_tokens": budget}).model_dump())
    batches: list[list[GenerationRequest]] = []
    inner = backend.hf.generate
    backend.hf.generate = lambda reqs, p, progress=None: batches.append(list(reqs)) or inner(reqs, p, progress)
    outputs = backend.generate(requests, params, progress=None)
    assert [(o.token_ids, o.texts, o.finished) for o in outputs] == [(o.token_ids, o.texts, o.finished)
                                                                      for o in expected]
    assert backend.generated_tokens == hf.generated_tokens and backend.prompt_tokens == hf.prompt_tokens
    # Its policy: more than one batch here, each within the budget (rows x (longest prompt + longest limit)),
    # or a single request; every request in exactly one batch.
    assert len(batches) > 1 and sorted(id(r) for b in batches for r in b) == sorted(id(r) for r in requests)
    for batch in batches:
        rows = sum(r.n for r in batch)
        held = rows * (max(len(r.prompt_ids) for r in batch) + max(r.limit(params) for r in batch))
        assert held <= budget or len(batch) == 1
    # max_answer_tokens cuts every answer there (a greedy answer's first tokens are the cut answer).
    capped = cls(loaded, max_batch_tokens=budget, max_answer_tokens=2).generate(requests, params)
    for out, full in zip(capped, expected, strict=True):
        for ids, done, full_ids, full_done in zip(out.token_ids, out.finished, full.token_ids, full.finished,
                                                  strict=True):
            assert len(ids) <= 2 and (done or len(ids) == 2)
            if temperature == 0:
                assert ids == full_ids[:2] and done == (full_done and len(full_ids) < 2)
    backend.close()


def answers_of(exp: Any, run_dir: Path) -> dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """Per answers step (its label): its key, its answers and its manifest (the steps must be done)."""
    from harness.pipeline import Pipeline

    steps = [s for s in Pipeline(exp, run_dir, progress=False).plan() if s.kind == "answers"]
    assert steps and all(s.done for s in steps)
    return {s.label: (s.artifact.key, read_jsonl(s.artifact.path / "answers.jsonl"), s.artifact.manifest())
            for s in steps}


def plan_to_run(exp: Any, run_dir: Path) -> set[str]:
    from harness.pipeline import Pipeline

    return {s.kind for s in Pipeline(exp, run_dir, progress=False).plan() if not s.done}


# Three runs on tiny models in one run dir (the first samples, trains one step and answers with hf; the others
# only answer and judge): ~10 s.
def test_guide_backend_runs_end_to_end_and_keys_its_answers(backend_on_path: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.pipeline import run_experiment

    draw_wider(monkeypatch)  # tiny models answering varied bytes rather than "\n" over and over
    data = small_experiment("token-batches", prompts=2, answer_tokens=8, budget={"max_steps": 1, "micro_batch": 2})
    run_dir = tmp_path / "run"
    hf_exp = parse_experiment(data, "test")
    run_experiment(hf_exp, run_dir=run_dir, progress=False)
    by_hf = answers_of(hf_exp, run_dir)

    # The guide's snippet, its budget lowered to one request per batch (the hf backend decoded each row's two
    # answers in one batch): a new answers key (the backend's name), the same answers and token counts.
    snippet = guide_backend()
    assert snippet["generation_backend"] == "token_batches"
    plugin = {**data, **snippet, "backends": {"token_batches": {**snippet["backends"]["token_batches"],
                                                                "max_batch_tokens": 1}}}
    exp = parse_experiment(plugin, "test")
    assert plan_to_run(exp, run_dir) == {"answers", "judgements"}  # samples, signals, training reused
    results = run_experiment(exp, run_dir=run_dir, progress=False)
    ours = answers_of(exp, run_dir)
    assert set(ours) == set(by_hf) and len(ours) >= 3
    for label, (key, answers, manifest) in ours.items():
        hf_key, hf_answers, hf_manifest = by_hf[label]
        assert key != hf_key
        assert [(a["output"], a["finished"]) for a in answers] == [(a["output"], a["finished"]) for a in hf_answers]
        assert any(a["output"] for a in answers)
        tokens = manifest["accounting"]["eval_generation_tokens"]
        assert tokens == hf_manifest["accounting"]["eval_generation_tokens"] > 0
    assert all("alpaca_eval2" in r.benchmarks for r in results.rows)
    assert json.loads((run_dir / "results.json").read_text())["experiment"]["generation_backend"] == "token_batches"

    # The guide's own budget (not a result param): nothing to do.
    assert plan_to_run(parse_experiment({**data, **snippet}, "test"), run_dir) == set()
    # max_answer_tokens (a result param): every row re-answered (and re-judged), nothing else; answers cut at 3.
    capped = {**data, **snippet,
              "backends": {"token_batches": {**snippet["backends"]["token_batches"], "max_answer_tokens": 3}}}
    capped_exp = parse_experiment(capped, "test")
    assert plan_to_run(capped_exp, run_dir) == {"answers", "judgements"}
    run_experiment(capped_exp, run_dir=run_dir, progress=False)
    for label, (key, answers, manifest) in answers_of(capped_exp, run_dir).items():
        assert key != ours[label][0]
        assert 0 < manifest["accounting"]["eval_generation_tokens"] <= 3 * len(answers)
        assert manifest["accounting"]["eval_generation_tokens"] < ours[label][2]["accounting"]["eval_generation_tokens"]
        for short, full in zip(answers, ours[label][1], strict=True):  # a greedy answer's start (whole characters)
            assert full["output"].startswith(short["output"].rstrip("\ufffd").strip())


@pytest.mark.parametrize(("backends", "phrase"), [
    ({"token_batches": {"max_batch_tokens": 0}},
     "backends.token_batches: max_batch_tokens: Input should be greater than or equal to 1 (got 0)"),
    ({"token_batches": {"batch": 4}},
     "backends.token_batches: unknown key 'batch'; allowed keys: max_answer_tokens, max_batch_tokens"),
], ids=["out-of-range", "unknown-key"])
def test_bad_backend_param_is_one_line_at_validate(backend_on_path: Path, backends: dict[str, Any], phrase: str,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {**small_experiment("token-batches-bad", budget={"max_steps": 1, "micro_batch": 2}), **guide_backend(),
            "backends": backends, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(path)]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("pad-harness: error: ") and phrase in err, err
    assert not (tmp_path / "run").exists()
