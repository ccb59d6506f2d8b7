"""The judging progress bar: judgements done of those asked, with the backend's retries and failed attempts.

A judge server that keeps failing is retried with backoff for up to a minute before the run stops; the
counts are refreshed every second (not only when an answer arrives), so those retries are seen as they
happen instead of as silence. The counts come from the backend's `usage` (`Judge.usage`, a `JudgeUsage`:
`retries`, `failures`), read afresh each time.
"""

from __future__ import annotations

import threading
from typing import Any

from harness.console import bar as progress_bar
from harness.judges.base import Judge


class JudgeProgress:
    """`with JudgeProgress(desc, total, backend) as p: ... p.advance()`; no bar when `desc` is None."""

    def __init__(self, desc: str | None, total: int, backend: Judge, refresh_s: float = 1.0) -> None:
        self.desc = desc
        self.total = total
        self.backend = backend
        self.refresh_s = refresh_s
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._start = (0, 0)
        self._shown: tuple[int, int] | None = None

    def _counts(self) -> tuple[int, int]:
        usage = self.backend.usage
        return (usage.retries, usage.failures)

    def counts(self) -> dict[str, int]:
        """Retries and failed attempts since this bar started."""
        retries, failures = self._counts()
        return {"retries": retries - self._start[0], "failed": failures - self._start[1]}

    def __enter__(self) -> JudgeProgress:
        if self.desc is None:
            return self
        self._start = self._counts()
        self._bar = progress_bar(total=self.total, desc=self.desc, unit="judgement")
        self._bar.set_postfix(self.counts(), refresh=False)
        if not self._bar.disable:
            self._watcher = threading.Thread(target=self._watch, name="judge-progress", daemon=True)
            self._watcher.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self._bar is None:
            return
        with self._lock:
            self._show()
            self._bar.update(n)

    def _show(self) -> None:
        counts = self.counts()
        key = (counts["retries"], counts["failed"])
        if key != self._shown:
            self._shown = key
            self._bar.set_postfix(counts, refresh=False)

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._lock:
                before = self._shown
                self._show()
                if self._shown != before:
                    self._bar.refresh()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._bar is not None:
            with self._lock:
                self._show()
                self._bar.close()
