"""The plugin registry: entry points, lazy loading, clear errors."""

from __future__ import annotations

from collections import OrderedDict
from importlib.metadata import EntryPoint

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


def test_loading_is_lazy(monkeypatch):
    """Listing names imports no plugin: a broken one is listed and fails only when asked for; a good one
    is imported on first use, once."""
    loads: list[str] = []

    class CountingEntryPoint(EntryPoint):
        def load(self):
            loads.append(self.name)
            return super().load()

    group = "harness.test-lazy"
    found = [CountingEntryPoint("broken", "harness_no_such_module:Thing", group),
             CountingEntryPoint("good", "collections:OrderedDict", group)]
    monkeypatch.setattr("harness.registry.entry_points", lambda group: [ep for ep in found if ep.group == group])
    reg: Registry = Registry(group, "widget")
    assert reg.names() == ["broken", "good"] and "broken" in reg and list(reg) == ["broken", "good"]
    assert loads == []  # listing names imports nothing
    assert reg.get("good") is OrderedDict and reg.get("good") is OrderedDict
    assert loads == ["good"]  # imported on first use, once
    with pytest.raises(ModuleNotFoundError, match="harness_no_such_module"):
        reg.get("broken")
    assert reg.describe("broken").startswith("(failed to load: ModuleNotFoundError")
    assert loads == ["good", "broken", "broken"]


def test_every_builtin_plugin_says_what_it_is_in_one_line():
    """`pad-harness methods | benchmarks | judges | backends | signals` print each plugin's description."""
    from harness.registry import BACKENDS, BENCHMARKS, JUDGES, METHODS, SIGNALS

    for registry in (METHODS, BENCHMARKS, JUDGES, BACKENDS, SIGNALS):
        for name in registry.names():
            text = registry.describe(name)
            assert len(text) >= 20 and "\n" not in text, (registry, name, text)
            assert text.rstrip(")").endswith("."), (name, text)  # a sentence, not a cut-off first line
