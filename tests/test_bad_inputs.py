"""Every bad input a user can give ends in ONE line on stderr that says what to do (no traceback), found by
`validate` where it can be. Each row of PROBES is one bad input: how to make it, the command, and a phrase
the message must contain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.experiments import small_experiment

from harness.cli import main

# Tiny random-init models: validating this loads no weights and reads only small local data.
BASE: dict[str, Any] = small_experiment("probe", budget={"max_steps": 1, "micro_batch": 2})


def write_experiment(tmp: Path, name: str = "exp.yaml", **changes: Any) -> Path:
    data = json.loads(json.dumps(BASE))
    data["output_dir"] = str(tmp / "run")
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def jsonl_prompts(tmp: Path, body: bytes, **changes: Any) -> list[str]:
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes(body)
    return ["validate", str(write_experiment(tmp, prompts={"source": f"jsonl:{prompts}", "count": 2}, **changes))]


def _utf16(tmp: Path) -> list[str]:
    path = write_experiment(tmp)
    path.write_bytes(path.read_text().encode("utf-16"))
    return ["validate", str(path)]


def _latin1(tmp: Path) -> list[str]:
    path = write_experiment(tmp)
    path.write_bytes(path.read_text().replace("name: probe", "name: probe\ndescription: café").encode("latin-1"))
    return ["validate", str(path)]


def _results(tmp: Path, text: str | None) -> list[str]:
    run = tmp / "run"
    run.mkdir()
    if text is not None:
        (run / "results.json").write_text(text)
    return ["report", str(run)]


def _no_rows(tmp: Path) -> list[str]:
    empty = {"experiment": {}, "experiment_hash": "0", "experiment_name": "x", "provenance": {}, "rows": [],
             "setting": ""}
    return _results(tmp, json.dumps(empty))


def _a_file(tmp: Path) -> Path:
    path = tmp / "a-file"
    path.write_text("not a directory\n")
    return path


PROBES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # -- the experiment file itself
    ("utf16-experiment", _utf16, "save it as UTF-8"),
    ("latin1-experiment", _latin1, "is not UTF-8 text"),
    ("bad-yaml", lambda t: ["validate", str(_write(t, "x.yaml", "name: x\nteacher: {model: a\n  b: [\n"))],
     "x.yaml:3:4: not valid YAML"),
    ("directory-as-experiment", lambda t: ["validate", str(t)], "is a directory, not a file"),
    ("missing-experiment", lambda t: ["validate", str(t / "nope.yaml")], "not found"),
    # -- prompts
    ("malformed-prompt-jsonl", lambda t: jsonl_prompts(t, b'{"prompt": "Write a poem about the sea"}\n{"prompt": "x\n'),
     "prompts.jsonl:2: not valid JSON"),
    ("non-utf8-prompt-jsonl", lambda t: jsonl_prompts(t, b'{"prompt": "Write a poem about the sea"}\n'
                                                         b'{"prompt": "caf\xe9 au lait, please"}\n'),
     "prompts.jsonl:2: this prompt file is not UTF-8"),
    ("non-object-prompt-line", lambda t: jsonl_prompts(t, b'{"prompt": "Write a poem about the sea"}\n[1, 2]\n'),
     "prompts.jsonl:2: expected a JSON object"),
    ("prompt-count-beyond-jsonl", lambda t: jsonl_prompts(t, b'{"prompt": "Write a poem about the sea"}\n'),
     "prompts.count is 2 but the prompt source"),
    ("prompt-count-beyond-sharegpt",
     lambda t: ["validate", str(write_experiment(t, prompts__count=100_000))], "lower prompts.count to at most"),
    # -- where results go
    ("run-dir-is-a-file", lambda t: ["run", str(write_experiment(t)), "--run-dir", str(_a_file(t))],
     "is a file, not a directory"),
    ("output-dir-is-a-file", lambda t: ["validate", str(write_experiment(t, output_dir=str(_a_file(t))))],
     "output_dir"),
    ("output-dir-unknown-placeholder", lambda t: ["validate", str(write_experiment(t, output_dir="runs/{nme}"))],
     "unknown placeholder(s) ['nme']"),
    # -- report
    ("report-empty-results", lambda t: _results(t, ""), "the results file is empty"),
    ("report-no-results", lambda t: _results(t, None), "no results.json there"),
    ("report-zero-rows", _no_rows, "holds no results (0 rows)"),
    ("report-damaged-results", lambda t: _results(t, '{"rows": ['), "not valid JSON"),
    ("report-missing-dir", lambda t: ["report", str(t / "nope")], "not found"),
    # -- lengths vs the models' context (2048 tokens for tiny models)
    ("answer-beyond-context",
     lambda t: ["validate", str(write_experiment(t, benchmarks=[{"name": "alpaca_eval2", "max_new_tokens": 5000}]))],
     "have a context of 2048 tokens"),
    ("samples-beyond-context", lambda t: ["validate", str(write_experiment(t, sampling__max_new_tokens=4000))],
     "sampling.max_new_tokens (4000)"),
    ("max-length-beyond-context", lambda t: ["validate", str(write_experiment(t, budget__max_length=4096))],
     "budget.max_length (4096)"),
    ("prompt-length-not-below-max-length",
     lambda t: ["validate", str(write_experiment(t, budget__max_prompt_length=64))],
     "budget.max_prompt_length (64) must be below budget.max_length (64)"),
    # -- accepted before, wrong
    ("duplicate-seeds", lambda t: ["validate", str(write_experiment(t, seeds=[0, 0]))], "repeats [0]"),
    ("no-methods", lambda t: ["validate", str(write_experiment(t, methods=[]))], "methods: empty"),
    ("subset-beyond-data",
     lambda t: ["validate", str(write_experiment(t, benchmarks=[{"name": "alpaca_eval2", "subset": 900,
                                                                  "max_new_tokens": 4}]))],
     "subset: 900 but the data has 805 items"),
    ("benchmark-data-malformed",
     lambda t: ["validate", str(write_experiment(t, benchmarks=[{
         "name": "gsm8k", "subset": 1, "max_new_tokens": 4,
         "params": {"num_fewshot": 0, "data_path": str(_write(t, "gsm.jsonl", '{"question": "q", "answer": "1"}\n{')),
                    }}]))],
     "gsm.jsonl:2: not valid JSON"),
    ("greedy-sampling", lambda t: ["validate", str(write_experiment(t, sampling__temperature=0))],
     "sampling.temperature: 0 is greedy decoding"),
    ("missing-openai-key", lambda t: ["validate", str(write_experiment(t, judge={"backend": "openai",
                                                                                 "model": "gpt-4"}))],
     "set the environment variable OPENAI_API_KEY"),
    ("missing-openai-key-at-run-start", lambda t: ["run", str(write_experiment(t, judge={"backend": "openai",
                                                                                         "model": "gpt-4"}))],
     "set the environment variable OPENAI_API_KEY"),
    # -- judgement files given to `score`
    ("score-malformed-judgements",
     lambda t: ["score", "mt_bench", "--judgments", str(_write(t, "j.jsonl", '{"score": 1, "turn": 1}\n{"sc'))],
     "j.jsonl:2: not valid JSON"),
]


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("make", "phrase"), [(m, p) for _, m, p in PROBES], ids=[i for i, _, _ in PROBES])
def test_bad_input_gives_one_clear_line(make: Callable[[Path], list[str]], phrase: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = make(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("pad-harness: error: ") and phrase in err, err
    assert not (tmp_path / "run" / "artifacts").exists()  # found before any work


def test_validate_checks_every_file_and_fails_if_any_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_seeds = write_experiment(tmp_path, "seeds.yaml", seeds=[1, 1])
    good = write_experiment(tmp_path, "good.yaml")
    bad_methods = write_experiment(tmp_path, "methods.yaml", methods=[])
    assert main(["validate", str(bad_seeds), str(good), str(bad_methods)]) == 2
    out, err = capsys.readouterr()
    assert f"{good}: ok" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and str(bad_seeds) in lines[0] and str(bad_methods) in lines[1], err
    assert main(["validate", str(good), str(good)]) == 0


def test_an_empty_trainset_names_what_emptied_it() -> None:
    """Without PAD, no message blames pad's filter; with it, the filter and its switch are named."""
    from harness.config import parse_experiment
    from harness.methods.base import Method
    from harness.registry import METHODS
    from harness.stages.trainset import empty_trainset_reason

    exp = parse_experiment({**BASE, "methods": [{"name": "dpo"}, {"name": "sft"}]}, "t")
    reason = empty_trainset_reason(exp, {}, 0, {})
    assert "sampling kept no prompt" in reason and "sampling.temperature" in reason and "pad" not in reason
    pad: Method = METHODS.get("pad")()
    reason = empty_trainset_reason(exp, {"pad": pad, "sft": METHODS.get("sft")()}, 8, {"pad": set()})
    assert "pad's filter kept 0" in reason and "pad's mcq_filter" in reason and "8 sampled" in reason
