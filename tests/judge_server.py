"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for judge tests over real HTTP.

`POST /v1/chat/completions` answers deterministically from the last message (with `logprobs.content` and
`top_logprobs` when asked) and can inject faults: queue them in `faults` ("429", "500", "timeout",
"garbage", "no_choices", "no_content", "no_logprobs"), one per incoming request, or set `fail_after` to fail
every request with HTTP 500 once that many answers were given (a server that dies mid-run). It counts
requests, successful answers and the most requests in flight at once. Use it as a context manager (or the
`judge_server` fixture): the server thread stops on exit.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def expected_text(messages: list[dict[str, str]]) -> str:
    """The answer the server gives: a pure function of the last message."""
    last = messages[-1]["content"] if messages else ""
    digest = hashlib.sha256(last.encode()).hexdigest()[:6]
    return f"verdict {digest} m"


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeOpenAIServer:
    def __init__(self, *, api_key: str | None = None, delay_s: float = 0.0, timeout_sleep_s: float = 0.6,
                 retry_after: str = "0") -> None:
        self.api_key = api_key  # when set, requests must carry it as a bearer token (else 401)
        self.delay_s = delay_s  # each answer takes this long, so concurrent requests overlap
        self.timeout_sleep_s = timeout_sleep_s
        self.retry_after = retry_after
        self.faults: deque[str] = deque()
        self.fail_after: int | None = None
        self.requests = 0  # every POST received
        self.answers = 0  # successful answers sent
        self.bodies: list[dict[str, Any]] = []
        self.events: list[tuple[float, str]] = []  # (time, "ok" | fault name)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling -----------------------------------------------------------------------------
    def _next_action(self) -> str:
        with self._lock:
            self.requests += 1
            if self.faults:
                action = self.faults.popleft()
            elif self.fail_after is not None and self.answers >= self.fail_after:
                action = "500"
            else:
                action = "ok"
                self.answers += 1  # counted at decision time, so `fail_after` is exact under concurrency
            self.events.append((time.monotonic(), action))
            return action

    def completion(self, body: dict[str, Any], drop_logprobs: bool = False) -> dict[str, Any]:
        text = expected_text(body.get("messages") or [])
        tokens = _tokens(text)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs") and not drop_logprobs:
            k = int(body.get("top_logprobs") or 0)
            content = []
            for tok in tokens:
                alts = [{"token": tok, "logprob": -0.25}]
                alts += [{"token": f"{tok}#{j}", "logprob": -1.0 - j} for j in range(1, k)]
                content.append({"token": tok, "logprob": -0.25, "top_logprobs": alts[:k]})
            choice["logprobs"] = {"content": content}
        prompt_tokens = sum(len(m.get("content", "").split()) for m in body.get("messages") or [])
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body.get("model"),
                "choices": [choice], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                                               "total_tokens": prompt_tokens + len(tokens)}}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(obj).encode(), headers)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                auth = self.headers.get("Authorization", "")
                if server.api_key is not None and auth != f"Bearer {server.api_key}":
                    # Like some real servers, echo the offending key: the client must not repeat it.
                    sent = auth.removeprefix("Bearer ")
                    self._send_json(401, {"error": {"message": f"Incorrect API key provided: {sent}"}})
                    return
                body = json.loads(raw or b"{}")
                with server._lock:
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(body, server._next_action())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout fault)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, body: dict[str, Any], action: str) -> None:
                if server.delay_s:
                    time.sleep(server.delay_s)
                if action == "429":
                    self._send_json(429, {"error": {"message": "rate limited"}},
                                    {"Retry-After": server.retry_after})
                elif action == "500":
                    self._send_json(500, {"error": {"message": "internal error"}})
                elif action == "timeout":
                    time.sleep(server.timeout_sleep_s)
                    self._send_json(200, server.completion(body))
                elif action == "garbage":
                    self._send(200, b'{"choices": [ this is not json')
                elif action == "no_choices":
                    self._send_json(200, {"id": "x", "object": "chat.completion", "model": body.get("model")})
                elif action == "no_content":
                    reply = server.completion(body)
                    del reply["choices"][0]["message"]["content"]
                    self._send_json(200, reply)
                elif action == "no_logprobs":
                    self._send_json(200, server.completion(body, drop_logprobs=True))
                else:
                    self._send_json(200, server.completion(body))

        return Handler
