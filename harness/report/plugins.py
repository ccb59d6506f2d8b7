"""What the report asks of the benchmarks and methods a run used, through the plugin registry.

The report names no benchmark and no method: a benchmark's columns, title and headline are its own
(`Benchmark.title`, `Benchmark.columns`), and so are a method's `proposed` flag and training curve
(`Method.proposed`, `Method.train_curve`). A name the registry does not know (results made where another
plugin was installed) still reports: its columns are derived from the metrics it recorded, and the method
is a baseline without a curve.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from harness.registry import BENCHMARKS, METHODS

if TYPE_CHECKING:
    from harness.benchmarks.base import Benchmark
    from harness.methods.base import Method, TrainCurve


def benchmark_class(name: str) -> type[Benchmark] | None:
    """The registered benchmark `name`, or None when none is registered under that name."""
    return BENCHMARKS.get(name) if name in BENCHMARKS else None


def method_class(name: str | None) -> type[Method] | None:
    """The registered method `name`, or None (no method, or none registered under that name)."""
    return METHODS.get(name) if name and name in METHODS else None


def proposed_methods(names: Iterable[str | None]) -> list[str]:
    """Those of the methods `names` whose class declares itself `proposed`, in order, once each."""
    out: list[str] = []
    for name in names:
        cls = method_class(name)
        if name and name not in out and cls is not None and cls.proposed:
            out.append(name)
    return out


def train_curve(method: str | None) -> TrainCurve | None:
    """The training-log metric a method's rows are plotted by, if the method declares one."""
    cls = method_class(method)
    return cls.train_curve if cls is not None else None
