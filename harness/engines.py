"""One generation engine at a time: the answers of a row, over every benchmark, come from one engine.

A vLLM engine takes 50-110 s to start on CPUs (minutes for a large model on a GPU) and holds its KV cache
until shut down. The plan runs a row's answers steps back to back (then its judgements), so the pool
keeps the row's generator across those steps and shuts it down as soon as any other step runs: at most
one engine is alive, and never beside a judge or a training run. `starts` counts the engines started by
every generator the run built (`track`: the pool's, the samplers', GKD's live sampler), for the run summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EnginePool:
    def __init__(self) -> None:
        self.key: str | None = None
        self.generator: Any = None
        self._tracked: list[Any] = []

    def track(self, generator: Any) -> Any:
        """Count `generator`'s engine starts (`engine_starts`, e.g. vLLM's) in `starts`."""
        self._tracked.append(generator)
        return generator

    @property
    def starts(self) -> int:
        return sum(int(g.engine_starts) for g in self._tracked)

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The generator for `key`, built once while consecutive steps ask for the same key."""
        if self.key != key:
            self.release()
            self.generator, self.key = build(), key
        return self.generator

    def release(self) -> None:
        if self.generator is not None:
            self.generator.close()
        self.generator, self.key = None, None
