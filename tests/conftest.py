"""Shared fixtures. Tiny random-init models are the default; SmolLM2 tests are marked `smollm`."""

from __future__ import annotations

import pytest

from harness.models.base import LoadedModel
from harness.models.chat import ChatFormatter
from harness.models.tiny import build_tiny_model


def make_tiny(name: str = "llama", seed: int = 0, system_prompt: str | None = None) -> LoadedModel:
    model, tok = build_tiny_model(name, seed=seed)
    formatter = ChatFormatter(tok, system_prompt)
    identity = {"model": f"tiny:{name}", "seed": seed, "system_prompt": system_prompt,
                "template": formatter.template_hash}
    return LoadedModel(model=model, tokenizer=tok, formatter=formatter, identity=identity)


@pytest.fixture
def tiny_student() -> LoadedModel:
    return make_tiny("llama", seed=0)


@pytest.fixture
def tiny_teacher() -> LoadedModel:
    return make_tiny("llama", seed=1, system_prompt="You are a careful, helpful assistant.")
