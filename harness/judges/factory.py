"""`build_judge`: the experiment's `JudgeSpec` -> a backend from the `harness.judges` registry, wrapped in
a `CachedJudge`.

A backend class may define `from_spec(spec, *, local_model_loader=None, **options)` (both built-ins do);
otherwise it is built as `cls(spec)`. `options` go to the backend unchanged (e.g. `backoff_base_s` for
`openai`, `batch_size` for `local`), so tests and callers can tune what the experiment file does not name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config import JudgeSpec
from harness.judges.cache import CachedJudge


def build_judge(spec: JudgeSpec, cache_path: Path | str,
                local_model_loader: Callable[[Any], Any] | None = None, **options: Any) -> CachedJudge:
    """The judge an experiment names, every call cached in the SQLite file `cache_path`.

    `local_model_loader(ModelSpec) -> LoadedModel` loads the `local` judge's model (default:
    `harness.models.sources.load_model`); other backends ignore it.
    """
    from harness.registry import JUDGES

    backend_cls: Any = JUDGES.get(spec.backend)
    from_spec = getattr(backend_cls, "from_spec", None)
    if from_spec is not None:
        inner = from_spec(spec, local_model_loader=local_model_loader, **options)
    else:
        inner = backend_cls(spec, **options)
    return CachedJudge(inner, Path(cache_path), price_per_1k_input=spec.price_per_1k_input,
                       price_per_1k_output=spec.price_per_1k_output)
