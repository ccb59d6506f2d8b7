"""`build_judge`: the experiment's `JudgeSpec` -> a backend from the `harness.judges` registry, built by its
`from_spec` with its validated `Params`, wrapped in a `CachedJudge`.

`params` are the backend's own settings (the experiment's `judge.params`); keyword `overrides` are the same
settings given in code (tests tuning e.g. the `openai` judge's backoff), laid over them. Both are validated
by the backend's `Params`: an unknown or bad key is a `ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import JudgeSpec
from harness.errors import RegistryError
from harness.judges.base import Judge
from harness.judges.cache import CachedJudge

if TYPE_CHECKING:
    from harness.config import ModelSpec
    from harness.models.base import LoadedModel


def judge_class(backend: str) -> type[Judge]:
    """The registered judge backend `backend`; a `RegistryError` if unknown or not a `Judge`."""
    from harness.registry import JUDGES

    backend_cls = JUDGES.get(backend)
    if not (isinstance(backend_cls, type) and issubclass(backend_cls, Judge)):
        raise RegistryError(f"the judge {backend!r} is registered as {backend_cls!r}, which is not a subclass of "
                            f"harness.judges.base.Judge")
    return backend_cls


def build_judge(spec: JudgeSpec, cache_path: Path | str,
                local_model_loader: Callable[[ModelSpec], LoadedModel] | None = None,
                params: Mapping[str, Any] | None = None, **overrides: Any) -> CachedJudge:
    """The judge an experiment names, every call cached in the SQLite file `cache_path`.

    `local_model_loader(ModelSpec) -> LoadedModel` loads the `local` judge's model (default:
    `harness.models.sources.load_model`); other backends ignore it.
    """
    backend_cls = judge_class(spec.backend)
    settings = backend_cls.parse_params({**(params or {}), **overrides}, f"judge ({spec.backend}).params")
    inner = backend_cls.from_spec(spec, settings, local_model_loader=local_model_loader)
    return CachedJudge(inner, Path(cache_path), price_per_1k_input=spec.price_per_1k_input,
                       price_per_1k_output=spec.price_per_1k_output)
