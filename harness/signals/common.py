"""What every signal function shares: the result it returns and how it reads a prompt group (a
`PromptGroup` or a dict with the same fields, as tests and the estimator pass them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SignalResult:
    values: list[Any]  # one entry per group, in group order
    forward_tokens: int = 0  # tokens run through the model (prompts encoded once + responses)
    generated_tokens: int = 0


def group_field(group: Any, name: str) -> Any:
    return group[name] if isinstance(group, dict) else getattr(group, name)


def finished_flags(group: Any) -> list[bool]:
    """Per response: finished (scored with its end-of-turn token) or cut at sampling (scored without)."""
    flags = group.get("finished") if isinstance(group, dict) else getattr(group, "finished", None)
    return list(flags) if flags is not None else [True] * len(group_field(group, "responses"))
