"""`openai` judge: any OpenAI-compatible chat-completions server (OpenAI itself, vLLM `serve`, ...).

Requests run concurrently on an asyncio loop, at most `JudgeSpec.concurrency` in flight. Each request is
retried with exponential backoff and jitter (honouring `Retry-After`) on 429, 408/409, 5xx, timeouts,
connection errors and malformed replies (not JSON, no choices, no text, log-probs missing when asked); other
4xx answers are the user's to fix and fail at once. The `openai` client's own retries are off so that every
attempt is counted here. The backoff's timing is the judge's `Params` (`judge.params` in the experiment file:
`backoff_base_s`, `backoff_max_s`, `jitter`, `retry_after_max_s`); it changes no judgement.

The API key is read from the environment variable named by `JudgeSpec.api_key_env`. Without it, a loopback
server (127.0.0.1, localhost, ::1: typically a local vLLM) gets the placeholder key `EMPTY`, which vLLM
accepts unless it was started with `--api-key`; any other server needs the variable set. The key lives only
inside the client: it is not in `identity`, the cache, logs or any error message (server text quoted in an
error has it masked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse

from pydantic import Field

from harness.config import JudgeSpec
from harness.errors import JudgeError
from harness.judges.base import Judge, JudgeParams, JudgeRequest, JudgeResponse, JudgeUsage, OnResult

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
PLACEHOLDER_KEY = "EMPTY"
RETRYABLE_STATUS = {408, 409, 429}
T = TypeVar("T")


class MalformedReply(Exception):
    """The server answered 200 but not with a usable chat completion."""


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def mask(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "<secret>"


def is_loopback(base_url: str) -> bool:
    return (urlparse(base_url).hostname or "") in LOOPBACK_HOSTS


def resolve_api_key(spec: JudgeSpec, base_url: str, environ: Mapping[str, str] | None = None) -> _Secret:
    env = os.environ if environ is None else environ
    key = env.get(spec.api_key_env, "").strip()
    if key:
        return _Secret(key)
    if is_loopback(base_url):
        return _Secret(PLACEHOLDER_KEY)
    raise JudgeError(
        f"the judge at {base_url} needs an API key: set the environment variable {spec.api_key_env} "
        f"(or name another variable with judge.api_key_env in the experiment file)"
    )


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def parse_completion(body: str, want_logprobs: bool) -> JudgeResponse:
    """A chat-completions JSON body -> JudgeResponse; MalformedReply when it is not a usable answer."""
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedReply(f"body is not JSON ({body[:40]!r})") from None
    if not isinstance(data, dict):
        raise MalformedReply("body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedReply("no choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise MalformedReply("choices[0].message.content is missing")
    top: list[dict[str, float]] | None = None
    if want_logprobs:
        top = _parse_logprobs(choice.get("logprobs"))
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    extra = {"finish_reason": choice.get("finish_reason"), "served_model": data.get("model")}
    try:
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        raise MalformedReply("usage counts are not integers") from None
    return JudgeResponse(text=content, top_logprobs=top, prompt_tokens=prompt_tokens,
                         completion_tokens=completion_tokens, extra=extra)


def _parse_logprobs(logprobs: Any) -> list[dict[str, float]]:
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        raise MalformedReply("log-probs were asked for but choices[0].logprobs.content is missing")
    out: list[dict[str, float]] = []
    try:
        for position in content:
            alternatives: dict[str, float] = {}
            for alt in position.get("top_logprobs") or []:
                value = float(alt["logprob"])
                token = str(alt["token"])
                if token not in alternatives or value > alternatives[token]:
                    alternatives[token] = value
            out.append(alternatives)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise MalformedReply("choices[0].logprobs.content has malformed entries") from None
    return out


class OpenAIJudge(Judge):
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM serve, ...), with retries and top log-probs."""

    class Params(JudgeParams):
        """Retry timing: attempt n waits min(backoff_max_s, backoff_base_s * 2**n) * (1 + jitter * U[0,1)),
        at least the server's `Retry-After` up to retry_after_max_s."""

        backoff_base_s: float = Field(1.0, ge=0)
        """Seconds of the first retry's wait; each further attempt doubles it."""
        backoff_max_s: float = Field(30.0, ge=0)
        """The longest wait between attempts, in seconds (before jitter)."""
        jitter: float = Field(0.25, ge=0)
        """Each wait is lengthened by up to this share, at random (spreads concurrent retries)."""
        retry_after_max_s: float = Field(60.0, ge=0)
        """A server's Retry-After is honoured up to this many seconds."""

    reports_incrementally = True

    def __init__(self, spec: JudgeSpec, *, backoff_base_s: float = 1.0, backoff_max_s: float = 30.0,
                 jitter: float = 0.25, retry_after_max_s: float = 60.0,
                 environ: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.base_url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._key = resolve_api_key(spec, self.base_url, environ)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.jitter = jitter
        self.retry_after_max_s = retry_after_max_s
        self.usage = JudgeUsage()
        self._rng = random.Random()

    @classmethod
    def preflight(cls, spec: JudgeSpec) -> str | None:
        try:
            resolve_api_key(spec, (spec.base_url or DEFAULT_BASE_URL).rstrip("/"))
        except JudgeError as exc:
            return str(exc)
        return None

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "openai", "model": self.spec.model, "base_url": self.base_url,
                "system_prompt": self.spec.system_prompt}

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.spec.model!r}, base_url={self.base_url!r})"

    # -- public API -----------------------------------------------------------------------------------
    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        return run_sync(self.acomplete(requests, progress, on_result))

    async def acomplete(self, requests: list[JudgeRequest], progress: str | None = None,
                        on_result: OnResult | None = None) -> list[JudgeResponse]:
        """Answer every request concurrently; `on_result(i, response)` fires as each one finishes. The first
        request that fails for good cancels the rest and raises (answers already reported are kept)."""
        from openai import AsyncOpenAI

        if not requests:
            return []
        client = AsyncOpenAI(api_key=self._key.reveal(), base_url=self.base_url, timeout=self.spec.timeout_s,
                             max_retries=0)
        semaphore = asyncio.Semaphore(self.spec.concurrency)
        results: list[JudgeResponse | None] = [None] * len(requests)

        async def one(index: int, request: JudgeRequest) -> None:
            async with semaphore:
                response = await self._complete_one(client, request)
            results[index] = response
            self.usage.record(response, self.spec.price_per_1k_input, self.spec.price_per_1k_output)
            if on_result is not None:
                on_result(index, response)

        tasks = [asyncio.create_task(one(i, r)) for i, r in enumerate(requests)]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await client.close()
        if progress:
            log.info("%s: %d judgements from %s", progress, len(requests), self.base_url)
        return [r for r in results if r is not None]

    # -- one request ----------------------------------------------------------------------------------
    def _messages(self, request: JudgeRequest) -> list[dict[str, str]]:
        messages = request.as_messages()
        if self.spec.system_prompt and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.spec.system_prompt}, *messages]
        return messages

    async def _complete_one(self, client: Any, request: JudgeRequest) -> JudgeResponse:
        import openai

        kwargs: dict[str, Any] = {"model": self.spec.model, "messages": self._messages(request),
                                  "max_tokens": request.max_tokens, "temperature": request.temperature}
        want_logprobs = request.top_logprobs is not None
        if want_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.top_logprobs
        last_problem = ""
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                self.usage.retries += 1
            self.usage.attempts += 1
            retry_after: float | None = None
            try:
                raw = await client.chat.completions.with_raw_response.create(**kwargs)
                return parse_completion(raw.text, want_logprobs)
            except MalformedReply as exc:
                last_problem = f"malformed reply: {exc}"
            except openai.APITimeoutError:
                last_problem = f"no answer within {self.spec.timeout_s:g} s (judge.timeout_s)"
            except openai.APIConnectionError as exc:
                last_problem = f"connection failed ({self._key.mask(str(exc.__cause__ or exc))})"
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    raise self._fatal_status(status, exc) from None
                last_problem = f"HTTP {status}"
                retry_after = _retry_after_s(exc.response.headers)
            self.usage.failures += 1  # shown live on the judging progress bar (harness.judges.progress)
            if attempt < self.spec.max_retries:
                delay = self._backoff(attempt, retry_after)
                log.debug("judge request failed (%s); retry %d in %.2f s", last_problem, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise self._gave_up(last_problem)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        delay *= 1.0 + self.jitter * self._rng.random()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max_s))
        return delay

    def _gave_up(self, problem: str) -> JudgeError:
        tries = self.spec.max_retries + 1
        if problem.startswith("connection failed"):
            hint = ("check that the server is running and reachable, and that judge.base_url in the "
                    "experiment file is right (OpenAI-compatible servers serve under /v1)")
        elif problem.startswith("no answer"):
            hint = "check that the server is not overloaded, or raise judge.timeout_s"
        elif problem.startswith("malformed"):
            hint = "check that judge.base_url points at an OpenAI-compatible chat-completions endpoint"
        else:
            hint = "the server keeps failing; check its logs, or lower judge.concurrency"
        return JudgeError(f"the judge server at {self.base_url} failed {tries} time(s) in a row, last: "
                          f"{problem}; {hint}")

    def _fatal_status(self, status: int, exc: Any) -> JudgeError:
        detail = self._key.mask(_error_detail(exc))
        if status in (401, 403):
            what = (f"rejected the API key (HTTP {status}: {detail}); check the key in the environment "
                    f"variable {self.spec.api_key_env}")
        elif status == 404:
            what = (f"has no model {self.spec.model!r} or no chat-completions endpoint (HTTP 404: {detail}); "
                    f"check judge.model and judge.base_url (OpenAI-compatible servers serve under /v1)")
        else:
            what = f"refused the request (HTTP {status}: {detail}); check judge.model and the request size"
        return JudgeError(f"the judge server at {self.base_url} {what}")


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        nested = body.get("error")
        message = nested.get("message") if isinstance(nested, dict) else body.get("message")
        if message:
            return str(message)[:200]
    text = getattr(getattr(exc, "response", None), "text", "") or ""
    return text[:200] or type(exc).__name__


def _retry_after_s(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: rare for these servers; fall back to our own backoff
    return None
