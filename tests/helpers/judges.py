"""Judge backends for tests."""

from __future__ import annotations

from harness.judges.base import Judge, JudgeRequest, JudgeResponse


class CountingJudge(Judge):
    """A backend without `on_result`: fed in chunks; fails on the request whose text says so."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def complete(self, requests: list[JudgeRequest], progress: str | None = None) -> list[JudgeResponse]:
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
