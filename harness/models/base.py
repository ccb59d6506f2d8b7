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

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    seed: int  # per request: the same request always gives the same output, whatever the batch
    n: int = 1


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
