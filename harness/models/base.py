"""Interfaces of the model layer: a loaded model, a `Generator` backend and a `Scorer`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from harness.models.chat import ChatFormatter


@dataclass
class LoadedModel:
    """A model with its tokenizer and the context it sees. `identity` goes into every cache key that
    depends on this model: its source, revision/weights hash, dtype, context and chat-template hash."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    formatter: ChatFormatter
    identity: dict[str, Any]
    device: Any = "cpu"
    parked: bool = False  # weights moved to host memory while an engine serves this model (residency.py)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    seed: int  # per request: the same request always gives the same output, whatever the batch
    n: int = 1
    # This request's own answer length (None: the call's `SamplingParams.max_new_tokens`): lets requests of
    # several benchmarks share one batch (harness.stages.row_answers).
    max_new_tokens: int | None = None

    def limit(self, params: SamplingParams) -> int:
        return params.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64


@dataclass
class GenerationOutput:
    token_ids: list[list[int]]  # n sequences, each WITHOUT the end-of-turn token
    texts: list[str]
    finished: list[bool] = field(default_factory=list)  # ended with end-of-turn (vs hit max_new_tokens)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



_ENGINE_STARTS = [0]  # generation engines started in this process, by every backend


def count_engine_start() -> None:
    """A backend that starts an engine (vLLM) counts it here, besides its own `engine_starts`."""
    _ENGINE_STARTS[0] += 1


def engine_starts_in_process() -> int:
    return _ENGINE_STARTS[0]

class Generator(ABC):
    """A generation backend (`hf`, `vllm`). Registered in the `harness.backends` entry-point group, built
    as `cls(loaded, batch_size=..., **params)` with `params` from the experiment file's `backends.<name>`,
    validated by the backend's own `Params`. `result_params` names the params that change outputs (they go
    into cache keys; e.g. memory settings do not)."""

    name: str = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    result_params: ClassVar[tuple[str, ...]] = ()
    # Whether it generates with the in-memory `LoadedModel.model` (hf) or loads the weights from the
    # identity's `path` itself (vllm): then a trained row's weights are not loaded into memory at all.
    uses_loaded_weights: ClassVar[bool] = True
    loaded: LoadedModel  # the model it generates for (its tokenizer and chat format, at least)
    engine_starts: int = 0  # engines this generator started (vLLM: one per model; hf: none)
    generated_tokens: int = 0  # tokens generated so far, end-of-turn included (generation accounting)
    prompt_tokens: int = 0  # prompt tokens encoded so far (forward accounting)

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, **params: Any) -> None:
        """How every backend is built (`harness.stages.data.build_generator`); `params` are its `Params`."""
        self.loaded, self.batch_size = loaded, batch_size

    @abstractmethod
    def generate(
        self, requests: list[GenerationRequest], params: SamplingParams, progress: str | None = None
    ) -> list[GenerationOutput]:
        """One output per request (each with `request.n` samples), in request order."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Backend name + model identity, for cache keys."""

    def close(self) -> None:  # noqa: B027 - optional hook: backends with an engine shut it down here
        """Release the backend's engine and memory; the generator is not used afterwards."""

    @classmethod
    def live_sampler(cls, student: LoadedModel, batch_size: int = 16, **params: Any) -> LiveSampler:
        """On-policy sampling from the student being trained (GKD): this backend built around the live
        weights at each call. Backends that load weights themselves (vllm) override it."""
        return LiveSampler(cls, student, batch_size, params)


class LiveSampler:
    """`sampler(model, prompts, max_new_tokens, seed, temperature=, top_p=)` -> one sampled response (token
    ids) per prompt from `model` as it is now: a backend that generates with in-memory weights, built
    around the live model at each call (cheap: no engine to start)."""

    def __init__(self, backend: type[Generator], student: LoadedModel, batch_size: int,
                 params: dict[str, Any]) -> None:
        self.backend, self.student, self.batch_size, self.params = backend, student, batch_size, params
        self.engine_starts = 0

    def __call__(self, model: Any, prompts: list[list[int]], max_new_tokens: int, seed: int,
                 temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
        device = next(model.parameters()).device
        live = LoadedModel(model=model, tokenizer=self.student.tokenizer, formatter=self.student.formatter,
                           identity={**self.student.identity, "live": True}, device=device)
        gen = self.backend(live, batch_size=self.batch_size, **self.params)
        outputs = gen.generate([GenerationRequest(list(p), seed + i) for i, p in enumerate(prompts)],
                               SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens))
        return [list(o.token_ids[0]) for o in outputs]

    def close(self) -> None:
        """Nothing is held between calls."""
