"""The `Judge` interface.

A judge answers chat-completion requests, with the top log-probs of the generated tokens when asked
(AlpacaEval's weighted annotator reads P('m') vs P('M') from the first token). Backends: `openai` (any
OpenAI-compatible server) and `local` (an in-process model). `CachedJudge` (judges/cache.py) wraps any
backend so that every call is stored in SQLite keyed by the judge identity and the full request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JudgeRequest:
    messages: tuple[tuple[str, str], ...]  # ((role, content), ...)
    max_tokens: int = 1024
    temperature: float = 0.0
    top_logprobs: int | None = None  # ask for the top-k log-probs of each generated token
    # The start of the judge's reply, fixed: the judge continues from it and `JudgeResponse.text` is the
    # continuation only. Judges that can do it say so with `supports_prefill`.
    prefill: str | None = None

    @classmethod
    def chat(cls, messages: list[dict[str, str]], **kwargs: Any) -> JudgeRequest:
        return cls(tuple((m["role"], m["content"]) for m in messages), **kwargs)

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class JudgeResponse:
    text: str
    # One dict per generated token: {token_text: logprob} for its top-k alternatives (None if not asked).
    top_logprobs: list[dict[str, float]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Judge(ABC):
    """A judge backend. Registered in the `harness.judges` entry-point group; built from a `JudgeSpec`."""

    supports_prefill: bool = False  # can continue a reply from `JudgeRequest.prefill`

    @abstractmethod
    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
        """Answer every request, in order."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Backend, model and settings that change answers (never the API key), for cache keys."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @classmethod
    def preflight(cls, spec: Any) -> str | None:
        """What would stop this judge from working with `spec` (e.g. a missing API key), found before a
        run starts (`pad-harness validate`); None when nothing is known to be wrong."""
        return None
