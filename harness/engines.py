"""One generation engine at a time: the answers of a row, over every benchmark, come from one engine.

A vLLM engine takes 50-110 s to start on CPUs (minutes for a large model on a GPU) and holds its KV cache
until shut down. The plan runs a row's answers steps back to back (then its judgements), so the pool
keeps the row's generator across those steps and shuts it down as soon as any other step runs: at most
one engine is alive, and never beside a judge or a training run. `starts` counts the engines started
(the run summary prints it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EnginePool:
    def __init__(self) -> None:
        self.key: str | None = None
        self.generator: Any = None
        self.starts = 0  # engines started (backends that count them, e.g. vLLM)

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The generator for `key`, built once while consecutive steps ask for the same key."""
        if self.key != key:
            self.release()
            self.generator, self.key = build(), key
        return self.generator

    def release(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.starts += int(getattr(self.generator, "engine_starts", 0))
        self.generator, self.key = None, None
