"""Judge backends for tests."""

from __future__ import annotations

from pydantic import Field

from harness.config import JudgeSpec
from harness.judges.base import Judge, JudgeParams, JudgeRequest, JudgeResponse, OnResult


class CountingJudge(Judge):
    """A backend without `on_result`: fed in chunks; fails on the request whose text says so."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        out = []
        for r in requests:
            content = r.messages[-1][1]
            if "boom" in content:
                raise RuntimeError("backend died")
            self.seen.append(content)
            out.append(JudgeResponse(text=content.upper(), prompt_tokens=1, completion_tokens=1))
        return out

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "counting"}


class EchoJudge(Judge):
    """A plugin judge that declares only `complete`, `identity` and `Params`: built by the base `from_spec`
    (`cls(spec, **params)`), not incremental, usage and counters from the base defaults."""

    class Params(JudgeParams):
        prefix: str = ">"  # changes the answers
        repeat: int = Field(1, ge=1)  # does not (how many times it "asks")

    result_params = ("prefix",)

    def __init__(self, spec: JudgeSpec, *, prefix: str = ">", repeat: int = 1) -> None:
        self.spec, self.prefix, self.repeat = spec, prefix, repeat

    def complete(self, requests: list[JudgeRequest], progress: str | None = None,
                 on_result: OnResult | None = None) -> list[JudgeResponse]:
        self.usage.attempts += self.repeat
        self.usage.retries += self.repeat - 1
        return [JudgeResponse(text=self.prefix + r.messages[-1][1]) for r in requests]

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "echo", "prefix": self.prefix}
