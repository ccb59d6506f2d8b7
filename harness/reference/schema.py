"""The experiment file's keys as the schema defines them: one `Key` per field of `Experiment`, of every model
nested in it, and of each built-in plugin's `Params`, with its type, default, allowed values and description.

Everything here is read off the pydantic models (annotations, `Field` bounds, attribute docstrings), so the
reference cannot drift from the schema; a field without a description is reported, not invented.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from harness.config import Experiment

# The built-in plugins: the entry points this package itself registers (pyproject.toml), not what else happens
# to be installed, so the page is the same on every machine.
BUILTIN_MODULES = ("harness.", "baselines.")
# Where each registry's plugins put their `Params` in the experiment file ({name}: the plugin's name).
PLUGIN_KINDS = {
    "METHODS": ("Methods", "methods[name={name}].params"),
    "BENCHMARKS": ("Benchmarks", "benchmarks[name={name}].params"),
    "JUDGES": ("Judges", "judge.params (backend: {name})"),
    "BACKENDS": ("Generation backends", "backends.{name}"),
    "SIGNALS": ("Signal sources", "(no keys)"),
}


@dataclass(frozen=True)
class Key:
    """One key of the experiment file."""

    path: str  # dotted, `[]` for list entries: `benchmarks[].judge.model`
    field: str  # the field's own name
    model: type[BaseModel]  # the schema class that declares it
    info: FieldInfo

    @property
    def description(self) -> str:
        return " ".join((self.info.description or "").split())

    @property
    def type_text(self) -> str:
        return type_text(self.info.annotation)

    @property
    def default_text(self) -> str:
        if self.info.is_required():
            return "required"
        if self.info.default_factory is not None:
            value = self.info.default_factory()  # type: ignore[call-arg]
        else:
            value = self.info.default
        return value_text(value)

    @property
    def allowed_text(self) -> str:
        parts = []
        choices = literal_choices(self.info.annotation)
        if choices:
            parts.append(" | ".join(f"`{c}`" for c in choices))
        symbols = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt")}
        for bound in self.info.metadata:
            for cls, (symbol, attr) in symbols.items():
                if isinstance(bound, cls):
                    parts.append(f"{symbol} {getattr(bound, attr)}")
            pattern = getattr(bound, "pattern", None)
            if pattern:
                parts.append(f"matches `{pattern}`")
        return ", ".join(parts)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The schema class a field holds (itself, optional, or a tuple of them), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        return True
    return any(is_sequence(a) for a in typing.get_args(annotation) if typing.get_origin(annotation) is not dict)


def literal_choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    out: list[Any] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            out += literal_choices(arg)
    return out


def type_text(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is Literal:
        return "choice"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_text(a) for a in args))
    if origin in (tuple, list):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return str(annotation)


def value_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(see its keys)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if isinstance(value, str) and value == "":
        return '`""`'
    return f"`{value}`"


def walk(model: type[BaseModel], prefix: str = "") -> list[Key]:
    """Every key of `model` and of the schema classes nested in it, depth first, in declaration order."""
    keys = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(Key(path, name, model, info))
        inner = nested_model(info.annotation)
        if inner is not None:
            keys += walk(inner, f"{path}[]." if is_sequence(info.annotation) else f"{path}.")
    return keys


def experiment_keys() -> list[Key]:
    return walk(Experiment)


@dataclass(frozen=True)
class Plugin:
    kind: str  # registry name: METHODS, BENCHMARKS, ...
    name: str
    cls: type
    params: type[BaseModel] | None  # None: it takes no parameters

    def keys(self) -> list[Key]:
        return walk(self.params) if self.params is not None else []

    @property
    def where(self) -> str:
        return PLUGIN_KINDS[self.kind][1].format(name=self.name)


def builtin_plugins() -> list[Plugin]:
    """Every plugin this package registers, by registry, in name order."""
    from harness import registry

    out = []
    for kind in PLUGIN_KINDS:
        reg = getattr(registry, kind)
        for name in reg.names():
            entry = reg.entry_point(name)
            if entry is None or not entry.startswith(BUILTIN_MODULES):
                continue
            cls = reg.get(name)
            params = getattr(cls, "Params", None)
            has_fields = isinstance(params, type) and issubclass(params, BaseModel) and bool(params.model_fields)
            out.append(Plugin(kind, name, cls, params if has_fields else None))
    return out


def undescribed() -> list[str]:
    """Every schema and built-in `Params` field without a description (the reference needs one for each)."""
    missing = [k.path for k in experiment_keys() if not k.description]
    for plugin in builtin_plugins():
        missing += [f"{plugin.where}: {k.path}" for k in plugin.keys() if not k.description]
    return missing


def default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default
