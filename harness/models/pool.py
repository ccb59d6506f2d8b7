"""The run's model pool: every model, generator and scorer a stage uses comes from here, by handle.

- `loaded(handle)`: the teacher and the base student are loaded once, on first use; a trained row is the
  student's architecture with the train artifact's weights, at most one in memory (rows are evaluated one
  after another).
- `generator(handle, backend)`: a registered backend built from the handle, with the experiment's params
  for it validated once by the backend's own `Params`. A backend that loads the weights itself (vLLM)
  gets the handle's identity (a trained row's own weights directory) and the device to itself: the
  transformers copies the pool holds wait in host memory until next used.
- `engine(handle, backend, wrap)`: the row's generation engine, kept while consecutive steps ask for the
  same handle and closed when another is asked for (`EnginePool`: at most one engine alive).
- `scorer(handle)`: one `Scorer` per handle for the run (its remembered prompt passes are dropped when a
  weights-loading engine takes the device).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from harness.config import ModelSpec
from harness.models.base import Generator, LoadedModel, engine_starts_in_process
from harness.models.handles import ModelHandle, trained_identity
from harness.models.residency import park, unpark
from harness.models.scoring import Scorer
from harness.registry import BACKENDS


class WeightsNotLoaded:
    """The model of a trained row asked for without its weights (a backend that loads them from disk): any use
    fails, so nothing can score or answer with the base student's weights under the trained row's name."""

    def __init__(self, row: str) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        from harness.errors import HarnessError

        raise HarnessError(f"the weights of {self._row} are not loaded in this process (its backend loads them "
                           f"itself); a benchmark that reads the model in memory must set `needs_weights = True`")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")


class EnginePool:
    """One generation engine at a time: the answers of a row, over every benchmark, come from one engine.

    A vLLM engine takes 50-110 s to start on CPUs (minutes for a large model on a GPU) and holds its KV cache
    until shut down. The plan runs a row's answers steps back to back (then its judgements), so the pool
    keeps the row's generator across those steps and shuts it down as soon as any other step runs: at most
    one engine is alive, and never beside a judge or a training run. `starts` counts the engines started by
    every generator the run built (the pool's, the samplers', GKD's live sampler), for the run summary.

    `starts` reads the process's engine-start counter (`harness.models.base.count_engine_start`) rather than
    the generators themselves: holding every generator the run built would hold every row's weights with
    them (a tuned run of 45 rows of SmolLM2 ran out of 24 GB that way).
    """

    def __init__(self) -> None:
        self.key: str | None = None
        self.generator: Any = None
        self._starts_before = engine_starts_in_process()

    @property
    def starts(self) -> int:
        return engine_starts_in_process() - self._starts_before

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The generator for `key`, built once while consecutive steps ask for the same key."""
        if self.key != key:
            self.release()
            self.generator, self.key = build(), key
        return self.generator

    def release(self) -> None:
        if self.generator is not None:
            self.generator.close()
        self.generator, self.key = None, None


def backend_key(backend_params: dict[str, dict[str, Any]], backend: str) -> dict[str, Any]:
    """What of a backend changes its outputs: its name and the result params (`Generator.result_params`)
    of the experiment's `backends.<backend>` (cache keys; memory settings are not among them). A result param
    its `Params` leave out of their dump when at its default (added later, e.g. vLLM's `quantization`) is left
    out here too, so keys made before it existed stay valid."""
    cls = BACKENDS.get(backend)
    params = cls.Params.model_validate(backend_params.get(backend, {})).model_dump(mode="json")
    return {"backend": backend, **{k: params[k] for k in cls.result_params if k in params}}


class ModelPool:
    def __init__(self, backend_params: dict[str, dict[str, Any]], batch_size: int) -> None:
        self._raw_params = backend_params  # the experiment file's `backends:`, validated per backend on use
        self._params: dict[str, dict[str, Any]] = {}
        self.batch_size = batch_size  # generation batch (sampling.batch_size)
        self._base: dict[str, LoadedModel] = {}  # teacher, student
        self._specs: dict[str, ModelSpec] = {}  # their specs (`offload`)
        self._trained: tuple[str, LoadedModel] | None = None
        self._externals: set[str] = set()  # names in `_base` of external rows' models (at most one)
        self._scorers: dict[str, Scorer] = {}
        self.engines = EnginePool()

    # ------------------------------------------------------------------ weights
    def loaded(self, handle: ModelHandle, weights: bool = True) -> LoadedModel:
        """The handle's model. `weights=False`: its tokenizer, chat format and identity are what the caller
        needs (a backend that loads the weights itself); nothing is loaded for a trained row, and a model
        parked in host memory stays there."""
        if handle.trained:
            return self._trained_model(handle, weights)
        if handle.external:
            self._drop_other_externals(handle.name)
        if handle.name not in self._base:
            from harness.models.sources import load_model

            self._offload_others(handle.name)  # room first: loading also takes device memory
            self._base[handle.name] = load_model(handle.spec)
            self._specs[handle.name] = handle.spec
        if not weights:
            return self._base[handle.name]
        self._offload_others(handle.name)
        return unpark(self._base[handle.name])

    def _drop_other_externals(self, name: str) -> None:
        """An external row's model is used by its own row only: the previous one goes before the next loads."""
        for other in list(self._externals):
            if other != name:
                self._base.pop(other, None)
                self._specs.pop(other, None)
                self._scorers.pop(other, None)
                self._externals.discard(other)
        self._externals.add(name)

    def _offload_others(self, name: str) -> None:
        """Models marked `offload` wait in host memory while another model's weights are in use."""
        for other, loaded in self._base.items():
            spec = self._specs.get(other)
            if other != name and spec is not None and spec.offload:
                park(loaded)

    def fresh_copy(self, handle: ModelHandle) -> LoadedModel:
        """A copy of the handle's model whose weights the caller may change (a training run)."""
        base = self.loaded(handle)
        return LoadedModel(model=copy.deepcopy(base.model), tokenizer=base.tokenizer, formatter=base.formatter,
                           identity=dict(base.identity), device=base.device)

    def _unquantized_copy(self, handle: ModelHandle) -> LoadedModel:
        """A copy of the handle's model to load trained weights into. A QLoRA student's base is quantized,
        but what it trained into is the merged, unquantized model (harness.training.lora): loaded without
        `quantization`."""
        if handle.spec.quantization is None:
            return self.fresh_copy(handle)
        from harness.models.sources import load_model

        return load_model(handle.spec.model_copy(update={"quantization": None}))

    def _trained_model(self, handle: ModelHandle, weights: bool) -> LoadedModel:
        assert handle.weights_dir is not None and handle.train_key is not None
        base = self.loaded(self._base_handle(handle), weights=False)
        identity = trained_identity(base.identity, handle.train_key, handle.weights_dir)
        if not weights:  # its tokenizer, chat format and identity; never the base student's weights
            return LoadedModel(model=WeightsNotLoaded(handle.name), tokenizer=base.tokenizer,  # type: ignore[arg-type]
                               formatter=base.formatter, identity=identity, device=base.device)
        self._offload_others("student")
        if self._trained is None or self._trained[0] != handle.train_key:
            from harness.training.checkpoint import load_trained_weights

            self._trained = None  # the previous trained row goes before the next is built
            loaded = self._unquantized_copy(self._base_handle(handle))
            load_trained_weights(loaded.model, handle.weights_dir)
            loaded.identity = identity
            self._trained = (handle.train_key, loaded)
        return unpark(self._trained[1])

    def _base_handle(self, handle: ModelHandle) -> ModelHandle:
        return ModelHandle("student", handle.spec, {})

    def held(self) -> list[LoadedModel]:
        return list(self._base.values()) + ([self._trained[1]] if self._trained else [])

    # ------------------------------------------------------------------ backends
    def backend_params(self, backend: str) -> dict[str, Any]:
        """The experiment's `backends.<backend>` validated by the backend's `Params` (once per run)."""
        if backend not in self._params:
            cls = BACKENDS.get(backend)
            self._params[backend] = cls.Params.model_validate(self._raw_params.get(backend, {})).model_dump()
        return self._params[backend]

    def backend_key(self, backend: str) -> dict[str, Any]:
        return backend_key(self._raw_params, backend)

    def generator(self, handle: ModelHandle, backend: str) -> Generator:
        """Backend `backend` built for `handle` (the caller closes it; engine starts are counted)."""
        cls = BACKENDS.get(backend)
        if not cls.uses_loaded_weights:
            self.make_room()
        loaded = self.loaded(handle, weights=cls.uses_loaded_weights)
        return cls(loaded, batch_size=self.batch_size, **self.backend_params(backend))

    def live_sampler(self, handle: ModelHandle, backend: str) -> Any:
        """On-policy sampling from the student being trained (GKD), through `backend`."""
        return BACKENDS.get(backend).live_sampler(self.loaded(handle), batch_size=self.batch_size,
                                                  **self.backend_params(backend))

    @staticmethod
    def engine_key(handle: ModelHandle, backend: str) -> str:
        return f"{handle.name}|{backend}"

    def engine(self, handle: ModelHandle, backend: str, wrap: Callable[[Generator], Any] = lambda g: g) -> Any:
        """The handle's generator kept across consecutive steps (built with `wrap` around it once);
        asking for another handle closes it first. Steps that share it declare `engine_key(handle, backend)`."""
        return self.engines.get(self.engine_key(handle, backend), lambda: wrap(self.generator(handle, backend)))

    def make_room(self) -> None:
        """An engine that loads its own weights takes the device: the models held here wait in host memory,
        and scorers drop the prompt passes they remember (KV caches on the device)."""
        for held in self.held():
            park(held)
        for scorer in self._scorers.values():
            scorer.forget_prompts()

    # ------------------------------------------------------------------ scoring
    def scorer(self, handle: ModelHandle, batch_size: int, remember_prompts: int = 0) -> Scorer:
        """One scorer per handle for the run (its weights brought back if an engine had them parked)."""
        loaded = self.loaded(handle)
        if handle.name not in self._scorers:
            self._scorers[handle.name] = Scorer(loaded, batch_size=batch_size, remember_prompts=remember_prompts)
        return self._scorers[handle.name]

    def close(self) -> None:
        self.engines.release()
