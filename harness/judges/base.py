"""The `Judge` interface.

A judge answers chat-completion requests, with the top log-probs of the generated tokens when asked
(AlpacaEval's weighted annotator reads P('m') vs P('M') from the first token). Backends: `openai` (any
OpenAI-compatible server), `vllm_server` (one it starts) and `local` (an in-process model). `CachedJudge`
(judges/cache.py) wraps any backend so that every call is stored in SQLite keyed by the judge identity and
the full request.

Everything the harness asks of a backend is declared on `Judge` with a default where one makes sense:
`complete` and `identity` (required); `from_spec` and `Params` (how it is built from the experiment's
`JudgeSpec` and its own validated settings; `result_params` names those that change judgements);
`usage` (what it spent: `JudgeUsage`); `counters()`; `reports_incrementally` with `complete`'s
`on_result`; `supports_prefill`; `preflight`; `close`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from harness.config import JudgeSpec, ModelSpec
    from harness.models.base import LoadedModel


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


OnResult = Callable[[int, JudgeResponse], None]


@dataclass
class JudgeUsage:
    """What a judge spent: answers obtained, backend attempts (HTTP requests incl. retries, or generate
    calls), retries, tokens and cost in USD at the experiment's prices."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0  # attempts that failed (error, timeout, malformed reply); each is retried or fatal
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def record(self, response: JudgeResponse, price_per_1k_input: float, price_per_1k_output: float) -> None:
        self.calls += 1
        self.prompt_tokens += response.prompt_tokens
        self.completion_tokens += response.completion_tokens
        self.cost_usd += (response.prompt_tokens * price_per_1k_input
                          + response.completion_tokens * price_per_1k_output) / 1000.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class JudgeParams(BaseModel):
    """Base of a judge backend's `Params`: its own settings from the experiment file (`judge.params`),
    unknown keys refused. The default (no field) takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Judge(ABC):
    """A judge backend. Registered in the `harness.judges` entry-point group; built from a `JudgeSpec`
    by `from_spec` (harness.judges.factory.build_judge)."""

    # The backend's own settings (validated; `from_spec` passes them to the constructor as keywords).
    Params: ClassVar[type[JudgeParams]] = JudgeParams
    # The `Params` fields that change what the judge answers: they go into the judgements' cache key
    # (harness.judges.choice.judge_key) when set to other than their default; the others (retry timing,
    # batch size) do not.
    result_params: ClassVar[tuple[str, ...]] = ()
    supports_prefill: bool = False  # can continue a reply from `JudgeRequest.prefill`
    # Calls `complete`'s `on_result` the moment each answer arrives (so `CachedJudge` commits it at once);
    # a backend that does not is fed its requests in small chunks instead and never passed `on_result`.
    reports_incrementally: ClassVar[bool] = False

    @abstractmethod
    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        """Answer every request, in order. When given, `on_result(index, response)` is called once per answer
        as it arrives; only backends that set `reports_incrementally` are given one by the harness."""

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Backend, model and settings that change answers (never the API key), for cache keys."""

    @cached_property
    def usage(self) -> JudgeUsage:
        """What this backend spent so far; it counts its own attempts, retries and failures here (the
        judging progress bar shows the last two live). A fresh `JudgeUsage` unless the backend sets one."""
        return JudgeUsage()

    def counters(self) -> dict[str, float]:
        """Counters for the run's accounting, diffed per benchmark by the evaluation stage ({} by default;
        `CachedJudge`: calls, cache hits, tokens, cost, retries)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @classmethod
    def preflight(cls, spec: JudgeSpec) -> str | None:
        """What would stop this judge from working with `spec` (e.g. a missing API key), found before a
        run starts (`pad-harness validate`); None when nothing is known to be wrong."""
        return None

    @classmethod
    def parse_params(cls, params: BaseModel | Mapping[str, Any] | None = None,
                     where: str = "judge.params") -> JudgeParams:
        """`params` validated by this backend's `Params`; a `ConfigError` naming each bad key otherwise."""
        if isinstance(params, cls.Params):
            return params
        values = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
        try:
            return cls.Params.model_validate(values)
        except ValidationError as exc:
            from harness.config import format_validation_error
            from harness.errors import ConfigError

            raise ConfigError(format_validation_error(exc, where, cls.Params)) from None

    @classmethod
    def from_spec(cls, spec: JudgeSpec, params: BaseModel | Mapping[str, Any] | None = None, *,
                  local_model_loader: Callable[[ModelSpec], LoadedModel] | None = None) -> Judge:
        """The backend an experiment's `JudgeSpec` names, with its validated `Params`. Default:
        `cls(spec, **params)`; `local_model_loader` (how an in-process judge loads its model) is for
        backends that need one."""
        build: Callable[..., Judge] = cls
        return build(spec, **dict(cls.parse_params(params)))
