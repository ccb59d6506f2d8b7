"""The import graph of harness/: no import cycles, and every import goes down the layers (or stays level).

Read from the source with `ast` (nothing is imported). Module-level AND function-local imports count (a
function-local import is still a dependency; it only moves the failure to run time); imports under
`if TYPE_CHECKING:` do not (they never run). `from P import name` depends on P (its namespace is read) and
also on P.name when that is a submodule; `import a.b.c` depends on a.b.c. The initialisation of parent
packages that every import implies is not counted (else every module would depend on its package's
__init__).

Layers, lowest first. A module may import from its own layer or a lower one:

    0 core            leaf utilities and the experiment schema: harness (package), errors, config, registry,
                      store, textfiles, fsmode, console, diskspace, processes, results, rundir_lock, prompts,
                      tuning (the search grid and its checks), runtime_facts, environment (cache root,
                      hub offline), config_layers (extends: and --set)
    1 api             the plugin interfaces: models.base (+ models.chat: LoadedModel's ChatFormatter),
                      methods.base (+ methods.vocab: its default model check), benchmarks.base,
                      judges.base, signals.base
    2 implementations models.*, methods.*, judges.*, benchmarks.*, training.*, signals, sampling
    3 engine          pipeline, stages.*, integrity, report.*, preflight, estimate.*, run_progress,
                      interop.* (model dirs, export, hub), tracking.*
    4 cli             cli, __main__, api (the Python API: the command line's twin), reference.* (the
                      experiment-key reference: it plans experiments to see which keys move cache keys)

Every module of harness/ must have a layer: a new module fails here until it is placed in LAYERS.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"

CORE, API, IMPL, ENGINE, CLI = range(5)
LAYER_NAMES = {CORE: "core", API: "api", IMPL: "implementations", ENGINE: "engine", CLI: "cli"}

# Exact module names first, then packages (a package entry covers it and everything under it).
LAYERS: dict[str, int] = {
    "harness": CORE,
    "harness.errors": CORE,
    "harness.config": CORE,
    "harness.registry": CORE,
    "harness.store": CORE,
    "harness.textfiles": CORE,
    "harness.fsmode": CORE,
    "harness.console": CORE,
    "harness.diskspace": CORE,
    "harness.processes": CORE,
    "harness.results": CORE,
    "harness.rundir_lock": CORE,
    "harness.runtime_facts": CORE,
    "harness.prompts": CORE,
    "harness.tuning": CORE,
    "harness.environment": CORE,
    "harness.config_layers": CORE,
    "harness.models.base": API,
    "harness.models.chat": API,
    "harness.methods.base": API,
    "harness.methods.vocab": API,
    "harness.benchmarks.base": API,
    "harness.judges.base": API,
    "harness.signals.base": API,
    "harness.sampling": IMPL,
    "harness.pipeline": ENGINE,
    "harness.integrity": ENGINE,
    "harness.preflight": ENGINE,
    "harness.run_progress": ENGINE,
    "harness.cli": CLI,
    "harness.api": CLI,
    "harness.__main__": CLI,
}
PACKAGE_LAYERS: dict[str, int] = {
    "harness.models": IMPL,
    "harness.methods": IMPL,
    "harness.judges": IMPL,
    "harness.benchmarks": IMPL,
    "harness.training": IMPL,
    "harness.signals": IMPL,
    "harness.stages": ENGINE,
    "harness.estimate": ENGINE,
    "harness.report": ENGINE,
    "harness.interop": ENGINE,
    "harness.tracking": ENGINE,
    "harness.reference": CLI,
}

# Known cycles, each as the exact set of modules its strongly connected component may hold. A new cycle,
# or a module joining this one, fails the test; so does an entry that no longer matches a cycle.
ALLOWED_CYCLES: list[frozenset[str]] = []

# Imports that go up the layers, each with why it is tolerated for now: (importer, imported) -> reason.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(HARNESS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def harness_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(HARNESS.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every import statement that can run (function-local ones included), not those under TYPE_CHECKING."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name` or its longest prefix that is a harness module (None outside harness)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    path = modules[module]
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str | None] = set()
    for node in visitor.found:
        if isinstance(node, ast.Import):
            targets |= {_known(alias.name, modules) for alias in node.names}
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        targets.add(_known(base, modules))
        targets |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    return {t for t in targets if t is not None and t != module}


def import_graph() -> dict[str, set[str]]:
    modules = harness_modules()
    return {name: imports_of(name, modules) for name in modules}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module (a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One shortest cycle through the component's first module, for the failure message."""
    start = min(component)
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node] & component):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    return sorted(component)


def layer_of(module: str) -> int | None:
    if module in LAYERS:
        return LAYERS[module]
    for package, layer in PACKAGE_LAYERS.items():
        if module == package or module.startswith(package + "."):
            return layer
    return None


# ---------------------------------------------------------------- tests

GRAPH = import_graph()


def test_the_graph_sees_known_edges() -> None:
    """The reader finds what it must: module-level, function-local and `from package import module`."""
    assert "harness.errors" in GRAPH["harness.config"]  # module level
    assert "harness.registry" in GRAPH["harness.config"]  # function-local
    assert {"harness.models", "harness.models.sources"} <= GRAPH["harness.preflight"]  # from package import module
    assert "harness.pipeline" not in GRAPH["harness.stages.evaluation"]  # only under TYPE_CHECKING


def test_no_import_cycles() -> None:
    problems = []
    for component in strongly_connected(GRAPH):
        if not any(component <= allowed for allowed in ALLOWED_CYCLES):
            problems.append(" -> ".join(a_cycle(GRAPH, component))
                            + (f"  (component: {', '.join(sorted(component))})" if len(component) > 2 else ""))
    assert not problems, (
        "import cycles:\n  " + "\n  ".join(problems) + "\nBreak them: move what both modules need to the "
        "module that owns it or to a small new module (a function-local import still counts).")


def test_allowed_cycles_are_still_cycles() -> None:
    components = strongly_connected(GRAPH)
    stale = [sorted(allowed) for allowed in ALLOWED_CYCLES if not any(c & allowed for c in components)]
    assert not stale, f"these allowlisted cycles are gone: delete them from ALLOWED_CYCLES: {stale}"


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in GRAPH if layer_of(m) is None)
    assert not missing, f"modules without a layer: {missing}; place each in LAYERS (see the table above)"


def test_imports_go_down_the_layers() -> None:
    upward = []
    for importer, targets in sorted(GRAPH.items()):
        for target in sorted(targets):
            low, high = layer_of(target), layer_of(importer)
            if low is None or high is None or low <= high or (importer, target) in ALLOWED_UPWARD:
                continue
            upward.append(f"{importer} ({LAYER_NAMES[high]}) imports {target} ({LAYER_NAMES[low]})")
    assert not upward, ("imports that go up the layers:\n  " + "\n  ".join(upward)
                        + "\nMove the shared piece down, or (for now) allowlist it in ALLOWED_UPWARD with why.")


def test_allowed_upward_imports_still_exist() -> None:
    stale = sorted(pair for pair in ALLOWED_UPWARD if pair[1] not in GRAPH.get(pair[0], set()))
    assert not stale, f"these allowlisted upward imports are gone: delete them from ALLOWED_UPWARD: {stale}"
