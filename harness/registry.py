"""One generic registry of plugins, loaded lazily from Python entry points.

Built-ins and third-party plugins register the same way, through the entry-point groups
`harness.methods`, `harness.benchmarks`, `harness.judges`, `harness.backends` and `harness.signals`.
Nothing is imported until a name is asked for, so a broken or heavy plugin costs nothing unless used.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from harness.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind  # "method", "benchmark", ... used in messages
        self._entry_points: dict[str, EntryPoint] | None = None
        self._extra: dict[str, type[T]] = {}
        self._loaded: dict[str, type[T]] = {}

    def _scan(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group):
                previous = found.get(ep.name)
                if previous is not None and previous.value != ep.value:
                    raise RegistryError(
                        f"two installed packages register the {self.kind} {ep.name!r} "
                        f"({previous.value} and {ep.value}); uninstall one or rename its entry point"
                    )
                found[ep.name] = ep
            self._entry_points = found
        return self._entry_points

    def register(self, name: str, obj: type[T]) -> None:
        """Register in-process (tests, notebooks); entry points are the normal path."""
        if name in self._scan() or name in self._extra:
            raise RegistryError(f"the {self.kind} {name!r} is already registered")
        self._extra[name] = obj

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._scan()) | set(self._extra))

    def entry_point(self, name: str) -> str | None:
        """Where an installed plugin is registered (`module:attr`); None for in-process registrations."""
        ep = self._scan().get(name)
        return ep.value if ep is not None else None

    def __contains__(self, name: str) -> bool:
        return name in self._scan() or name in self._extra

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> type[T]:
        if name in self._loaded:
            return self._loaded[name]
        if name in self._extra:
            return self._extra[name]
        ep = self._scan().get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none installed"
            raise RegistryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        obj = ep.load()
        self._loaded[name] = obj
        return obj

    def describe(self, name: str) -> str:
        """The first paragraph of the plugin's docstring on one line, for `pad-harness methods` and friends."""
        try:
            obj = self.get(name)
        except Exception as exc:  # a broken plugin is listed, not fatal for listing the others
            return f"(failed to load: {type(exc).__name__}: {exc})"
        doc = (obj.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in doc.splitlines())


METHODS: Registry = Registry("harness.methods", "method")
BENCHMARKS: Registry = Registry("harness.benchmarks", "benchmark")
JUDGES: Registry = Registry("harness.judges", "judge")
BACKENDS: Registry = Registry("harness.backends", "generation backend")
SIGNALS: Registry = Registry("harness.signals", "signal source")
