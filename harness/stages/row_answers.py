"""A row's greedy answers to every benchmark, decoded in shared batches.

Decoding a few items is bound by reading the weights once per step, not by the batch: measured with
SmolLM2-135M on 2 CPU cores, one decode step takes 52 ms for 1 sequence, 100 ms for 4 and 168 ms for 32
(`tests/perf/decode_batch.py`). A row answering 3 AlpacaEval, 4 IFEval and 2 GSM8K items one benchmark at a
time pays a full step per token for each benchmark; answered together it pays the steps once. The same
holds for a GPU with small subsets.

`PrefetchedGenerator` wraps the row's generator (the engine pool holds it for the row's answers steps):
`prefetch` answers, in one call, the greedy conversations every benchmark still to answer declares in
advance (`Benchmark.greedy_conversations`, each request with its benchmark's own `max_new_tokens`); then
`generate` serves a greedy request from those answers and passes anything else to the backend. A greedy
answer does not depend on the batch it was decoded in (tested for the hf backend), so artifacts are the
same as when each benchmark decodes alone.
"""

from __future__ import annotations

from typing import Any

from harness.models.base import GenerationOutput, GenerationRequest, Generator, SamplingParams

Key = tuple[tuple[int, ...], int]  # (prompt ids, max_new_tokens)
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=1)  # every prefetched request sets its own


class PrefetchedGenerator:
    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self._answers: dict[Key, GenerationOutput] = {}
        self._served_tokens = 0  # tokens of prefetched answers handed out
        self._prefetch_tokens = 0  # tokens the backend generated while prefetching

    @property
    def generated_tokens(self) -> int:
        """Tokens of the answers handed out (a prefetched answer counts when served, so each benchmark's
        accounting holds its own answers) plus what the backend generated for requests passed through."""
        return self._served_tokens + int(self.inner.generated_tokens) - self._prefetch_tokens

    @property
    def identity(self) -> dict[str, Any]:
        return self.inner.identity

    @property
    def engine_starts(self) -> int:
        return int(self.inner.engine_starts)

    def prefetch(self, requests: list[GenerationRequest], progress: str | None = None) -> None:
        """Answer these greedy requests (`max_new_tokens` set on each) now, in shared batches."""
        todo: dict[Key, GenerationRequest] = {}
        for r in requests:
            key = (tuple(r.prompt_ids), r.limit(GREEDY))
            if key not in self._answers:
                todo.setdefault(key, r)
        if not todo:
            return
        before = int(self.inner.generated_tokens)
        outputs = self.inner.generate(list(todo.values()), GREEDY, progress=progress)
        self._prefetch_tokens += int(self.inner.generated_tokens) - before
        self._answers.update(zip(todo, outputs, strict=True))

    def generate(self, requests: list[GenerationRequest], params: SamplingParams,
                 progress: str | None = None) -> list[GenerationOutput]:
        if params.temperature != 0 or any(r.n != 1 for r in requests):
            return self.inner.generate(requests, params, progress=progress)
        keys = [(tuple(r.prompt_ids), r.limit(params)) for r in requests]
        missing = [r for r, key in zip(requests, keys, strict=True) if key not in self._answers]
        fresh = iter(self.inner.generate(missing, params, progress=progress) if missing else [])
        outputs = []
        for key in keys:
            if key in self._answers:
                out = self._answers[key]
                self._served_tokens += sum(len(ids) + int(done) for ids, done in zip(out.token_ids, out.finished,
                                                                                     strict=True))
                outputs.append(GenerationOutput(list(out.token_ids), list(out.texts), list(out.finished)))
            else:
                outputs.append(next(fresh))
        return outputs

    def close(self) -> None:
        self._answers.clear()
        self.inner.close()

