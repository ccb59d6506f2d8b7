"""`CachedJudge`: every judge call stored in SQLite, keyed by the judge identity and the full request.

Lookups come first; only misses reach the backend. Each answer is committed the moment it arrives, so a run
interrupted mid-judging (crash, Ctrl-C, a judge server that dies) keeps every finished judgement and a resumed
run asks only for the rest. Backends that set `reports_incrementally = True` call `complete`'s `on_result(index,
response)` as each answer arrives (every built-in backend does, including the concurrent HTTP one); any
other backend is fed the misses in small chunks, so at most one chunk of work can be lost. `CachedJudge`
reports incrementally itself: cached answers at once, the others as the backend delivers them.

The database holds no secret: the identity never contains an API key and the request is only the messages and
decoding settings. WAL mode; one connection per `CachedJudge`, guarded by a lock, because an async backend may
deliver answers from its event-loop thread. A truncated or corrupt file is salvaged: what is readable is kept,
the rest is asked again (harness.judges.cache_db).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.judges.base import Judge, JudgeRequest, JudgeResponse, JudgeUsage, OnResult
from harness.judges.cache_db import CacheFile, is_corruption
from harness.judges.progress import JudgeProgress

log = logging.getLogger(__name__)

__all__ = ["CachedJudge", "JudgeUsage", "cache_key", "canonical_json", "request_payload"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_payload(request: JudgeRequest) -> dict[str, Any]:
    payload = {"messages": [list(m) for m in request.messages], "max_tokens": request.max_tokens,
               "temperature": request.temperature, "top_logprobs": request.top_logprobs}
    if request.prefill is not None:  # only when set, so keys of requests without one stay as they were
        payload["prefill"] = request.prefill
    return payload


def cache_key(identity: dict[str, Any], request: JudgeRequest) -> str:
    blob = canonical_json({"identity": identity, "request": request_payload(request)})
    return hashlib.sha256(blob.encode()).hexdigest()


def _encode_response(response: JudgeResponse) -> str:
    return canonical_json({"text": response.text, "top_logprobs": response.top_logprobs,
                           "prompt_tokens": response.prompt_tokens,
                           "completion_tokens": response.completion_tokens, "extra": response.extra})


def _decode_response(blob: str) -> JudgeResponse:
    data = json.loads(blob)
    return JudgeResponse(text=data["text"], top_logprobs=data["top_logprobs"],
                         prompt_tokens=int(data["prompt_tokens"]),
                         completion_tokens=int(data["completion_tokens"]), cached=True,
                         extra=data.get("extra") or {})


class CachedJudge(Judge):
    """Wraps any judge; answers from SQLite when it can, asks the backend only for the misses.

    Counters (this object's lifetime): `calls` (answers the backend produced), `cache_hits`, `prompt_tokens`,
    `completion_tokens` and `cost_usd` (spent on those calls only; cached answers cost nothing again), in
    `usage` and `counters()`; the backend's retries come from its own `usage`.
    """

    reports_incrementally = True

    def __init__(self, inner: Judge, db_path: Path | str, *, price_per_1k_input: float = 0.0,
                 price_per_1k_output: float = 0.0, chunk_size: int = 8) -> None:
        self.inner = inner
        self.db_path = Path(db_path)
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.chunk_size = max(1, chunk_size)
        self.usage = JudgeUsage()
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._file = CacheFile(self.db_path, _SCHEMA)  # a corrupt or truncated file is salvaged (cache_db)
        self._identity_json = canonical_json(inner.identity)

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._file.current()

    def _salvaging(self, work: Callable[[], Any]) -> Any:
        """A read or write; on corruption the file is salvaged (harness.judges.cache_db) and it runs again."""
        try:
            return work()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            with self._lock:
                self._file.salvage(exc)
            return work()

    @property
    def supports_prefill(self) -> bool:  # type: ignore[override]
        return self.inner.supports_prefill

    # -- counters -------------------------------------------------------------------------------------
    @property
    def calls(self) -> int:
        return self.usage.calls

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    def stats(self) -> dict[str, float]:
        """Counters for the run's accounting (the backend's own retry count included)."""
        return {"calls": self.calls, "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd,
                "retries": self.inner.usage.retries}

    def counters(self) -> dict[str, float]:
        """Same as `stats()`; what the evaluation stage reads (it diffs two snapshots per benchmark)."""
        return self.stats()

    @property
    def identity(self) -> dict[str, Any]:
        return self.inner.identity

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0])

    # -- the work -------------------------------------------------------------------------------------
    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        identity = self.inner.identity
        keys = [cache_key(identity, r) for r in requests]
        found = self._lookup(set(keys))
        results: list[JudgeResponse | None] = [None] * len(requests)
        misses: dict[str, list[int]] = {}  # key -> the indices asking for it (duplicates are asked once)
        for i, key in enumerate(keys):
            if key in found:
                results[i] = found[key]
                if on_result is not None:
                    on_result(i, found[key])
            else:
                misses.setdefault(key, []).append(i)
        with self._lock:
            self.cache_hits += sum(1 for key in keys if key in found)
        if progress:
            log.info("%s: %d judgements cached, %d to ask %s", progress, len(requests) - len(misses),
                     len(misses), identity.get("backend", "the judge"))
        miss_keys = list(misses)
        miss_requests = [requests[misses[k][0]] for k in miss_keys]
        bar = JudgeProgress(progress, len(miss_requests), self.inner)  # done/total, retries, failed attempts

        def store(j: int, response: JudgeResponse) -> None:
            self._store(miss_keys[j], miss_requests[j], response)
            with self._lock:
                self.usage.record(response, self.price_per_1k_input, self.price_per_1k_output)
            for i in misses[miss_keys[j]]:  # duplicates of a request asked in this call share its answer
                results[i] = response
                if on_result is not None:
                    on_result(i, response)
            bar.advance()

        if miss_requests:
            with bar:
                self._ask(miss_requests, store, progress)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"judge backend returned no answer for requests {missing[:5]}")
        return [r for r in results if r is not None]

    async def acomplete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        """For async callers: runs `complete` on a worker thread so the caller's loop keeps running."""
        return await asyncio.to_thread(self.complete, requests, progress)

    def _ask(self, requests: list[JudgeRequest], store: OnResult, progress: str | None) -> None:
        if self.inner.reports_incrementally:
            reported: set[int] = set()

            def store_once(j: int, response: JudgeResponse) -> None:
                store(j, response)
                reported.add(j)

            answers = self.inner.complete(requests, progress, on_result=store_once)
            self._check_count(answers, requests)
            for j, response in enumerate(answers):  # a backend that skipped the callback loses nothing
                if j not in reported:
                    store(j, response)
            return
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start:start + self.chunk_size]
            answers = self.inner.complete(chunk, progress)
            self._check_count(answers, chunk)
            for offset, response in enumerate(answers):
                store(start + offset, response)

    @staticmethod
    def _check_count(answers: list[JudgeResponse], requests: list[JudgeRequest]) -> None:
        if len(answers) != len(requests):
            raise RuntimeError(f"judge backend returned {len(answers)} answers for {len(requests)} requests")

    def _lookup(self, keys: set[str]) -> dict[str, JudgeResponse]:
        return dict(self._salvaging(lambda: self._read(keys)))

    def _read(self, keys: set[str]) -> dict[str, JudgeResponse]:
        found: dict[str, JudgeResponse] = {}
        with self._lock:
            for batch in _chunks(sorted(keys), 500):
                marks = ",".join("?" * len(batch))
                rows = self._conn.execute(
                    f"SELECT key, response FROM judgements WHERE key IN ({marks})", batch
                ).fetchall()
                for k, v in rows:
                    try:
                        found[k] = _decode_response(v)
                    except (TypeError, ValueError, KeyError):  # a damaged row: asked again
                        continue
        return found

    def _store(self, key: str, request: JudgeRequest, response: JudgeResponse) -> None:
        self._salvaging(lambda: self._write(key, request, response))

    def _write(self, key: str, request: JudgeRequest, response: JudgeResponse) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO judgements (key, identity, request, response, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, self._identity_json, canonical_json(request_payload(request)),
                 _encode_response(response), time.time()),
            )
            self._conn.commit()

    def close(self) -> None:
        self.inner.close()
        with self._lock:
            self._file.close()

    def __enter__(self) -> CachedJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
