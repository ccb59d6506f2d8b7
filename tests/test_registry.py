"""The plugin registry: entry points, lazy loading, clear errors."""

from __future__ import annotations

import pytest

from harness.errors import RegistryError
from harness.registry import BENCHMARKS, JUDGES, METHODS, Registry


def test_builtins_are_registered_through_entry_points():
    assert {"pad", "sft", "seqkd", "kd", "dpo", "simpo", "gkd", "dpkd", "plad"} <= set(METHODS.names())
    assert {"alpaca_eval2", "arena_hard", "mt_bench", "gsm8k"} <= set(BENCHMARKS.names())
    assert {"local", "openai"} <= set(JUDGES.names())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(RegistryError, match=r"unknown method 'nope'; known methods: .*pad"):
        METHODS.get("nope")


def test_in_process_registration_and_duplicates():
    reg: Registry = Registry("harness.test-nothing", "widget")
    reg.register("a", int)
    assert reg.get("a") is int and reg.names() == ["a"]
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", str)
    reg.unregister("a")
    assert "a" not in reg


def test_loading_is_lazy():
    reg: Registry = Registry("harness.methods", "method")
    assert "pad" in reg.names()
    assert reg._loaded == {}  # listing names imports nothing
