"""Tiny random-init models with more decided outputs, for end-to-end tests that need them.

As built (harness/models/tiny.py), a tiny model is nearly uniform: it answers "\n" over and over and gives
every response about the same entropy. `draw_wider(monkeypatch)` makes every tiny model built afterwards
re-draw its matrices wider (seeded by the model's seed): answers become varied bytes, different per row, and
next-token distributions differ from response to response.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch


def draw_wider(monkeypatch: pytest.MonkeyPatch, scale: float = 0.5) -> None:
    from harness.models import tiny

    build = tiny.build_tiny_model

    def wider(name: str, seed: int = 0, tokenizer: Any | None = None) -> tuple[Any, Any]:
        model, tok = build(name, seed=seed, tokenizer=tokenizer)
        draw = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:
                    param.copy_(torch.randn(param.shape, generator=draw) * scale)
        return model, tok

    monkeypatch.setattr(tiny, "build_tiny_model", wider)
