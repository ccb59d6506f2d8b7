"""One cache root and one "hub offline?" rule (harness.environment), used by every module that asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import environment


@pytest.mark.parametrize("variable", environment.OFFLINE_VARIABLES)
def test_any_offline_variable_means_the_hub_is_not_asked(monkeypatch, variable):
    for name in environment.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not environment.hub_offline()
    monkeypatch.setenv(variable, "True")
    assert environment.hub_offline()
    from harness.textfiles import hub_unreachable

    assert hub_unreachable() is None  # offline: the local cache is read, nothing is probed


def test_every_cache_lives_under_one_root(monkeypatch, tmp_path):
    from harness.benchmarks.alpaca_eval_lc import cache_path
    from harness.benchmarks.nltk_punkt import nltk_data_root
    from harness.models.sources import cache_root as models_root

    monkeypatch.setenv("PAD_HARNESS_CACHE", str(tmp_path))
    for path in (models_root(), nltk_data_root(), cache_path()):
        assert Path(path).is_relative_to(tmp_path)
    monkeypatch.delenv("PAD_HARNESS_CACHE")
    assert environment.cache_root() == Path.home() / ".cache" / "pad-harness"
