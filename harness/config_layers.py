"""Variants without copies: `extends:` in an experiment file and `--set key=value` on the command line.

- `extends: base.yaml` (a path relative to the file that says it; chains allowed, cycles refused): the base
  file's mapping, deep-merged with this file's keys. Mappings merge key by key; lists and scalars are
  replaced whole (a variant that lists `methods:` lists all of them), so a variant file holds only what
  differs.
- `--set PATH=VALUE` (repeatable, applied in order after `extends:`): PATH is dotted; a list entry is
  addressed by its name or label (`methods.dpo.params.beta=0.05`, `benchmarks.alpaca_eval2.subset=50`,
  `external.their-run.answers.mt_bench=f.jsonl`) or by its index (`methods.0.label=x`); VALUE is parsed as
  YAML (`2e-5` is a number, `[1, 2]` a list, `null` None). Missing mappings on the way are created; the
  result is validated by the schema like any file, with the same one-line errors.

Both are recorded: `Experiment.origin` (not part of any key) lands in `results.json` provenance, and the
run dir's `experiment.yaml` holds the resolved experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

# The key each list is addressed by, besides an index: a method by its label (else its name), ...
LIST_KEYS = {"methods": ("label", "name"), "benchmarks": ("name",), "external": ("label",),
             "demonstrations": ("user",)}


def read_mapping(path: Path) -> dict[str, Any]:
    """One experiment file's YAML mapping (one clear error for unreadable or non-mapping YAML)."""
    from harness.textfiles import check_is_file, read_utf8

    check_is_file(path, "experiment file", ConfigError, pattern="*.y*ml")
    text = read_utf8(path, "experiment file", ConfigError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file there") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must be a YAML mapping, got {type(data).__name__}")
    return data


def resolve_extends(path: Path, local_paths: Any = None, _chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any],
                                                                                                list[str]]:
    """The file's mapping with its `extends:` chain merged in, and the chain (base first). `local_paths`
    rewrites one file's relative paths before merging (`external` answers files, relative to their file)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: `extends:` forms a cycle ({cycle}); remove one of them")
    data = read_mapping(path)
    if local_paths is not None:
        data = local_paths(data, path.parent)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data, [str(path)]
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: `extends:` takes one file path (relative to this file), got {base_name!r}")
    base_path = path.parent / base_name
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {base_name!r}, which is not a file ({base_path}); the path is relative "
                          f"to the file that extends it")
    base, chain = resolve_extends(base_path, local_paths, (*_chain, resolved))
    return deep_merge(base, data), [*chain, str(path)]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merged key by key, anything else (lists too) replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`data` with each `PATH=VALUE` applied in order (see the module doc)."""
    for assignment in assignments:
        path, value = parse_assignment(assignment)
        data = _set(data, path, value, assignment)
    return data


def parse_assignment(assignment: str) -> tuple[list[str], Any]:
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in parts):
        raise ConfigError(f"--set {assignment!r}: write PATH=VALUE with a dotted PATH, e.g. "
                          f"--set budget.learning_rate=2e-5 or --set methods.dpo.params.beta=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({exc}); quote it") from None
    return parts, value


def _set(data: dict[str, Any], path: list[str], value: Any, assignment: str) -> dict[str, Any]:
    """A copy of `data` with the value at `path` replaced (copies along the path only)."""
    root: Any = dict(data)
    node: Any = root
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(path[:i]) or "(top level)"
        if isinstance(node, list):
            index = _list_index(node, part, path[i - 1] if i else "", assignment)
            if last:
                node[index] = value
            else:
                node[index] = _copy_container(node[index], part, assignment)
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node[part] = _copy_container(node.get(part, {}), part, assignment)
                node = node[part]
        else:
            raise ConfigError(f"--set {assignment!r}: {where} is {node!r}, not a mapping or list to go into")
    return dict(root)


def _copy_container(value: Any, part: str, assignment: str) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    raise ConfigError(f"--set {assignment!r}: {part!r} is {value!r}, not a mapping or list to go into")


def _list_index(items: list[Any], part: str, list_name: str, assignment: str) -> int:
    """The entry `part` names: an index, or the one entry whose name/label (LIST_KEYS) is `part`."""
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--set {assignment!r}: {list_name} has {len(items)} entries, no index {index}")
        return index
    keys = LIST_KEYS.get(list_name, ("label", "name"))
    matches = [i for i, item in enumerate(items) if isinstance(item, dict) and _entry_name(item, keys) == part]
    if len(matches) != 1:
        names = [_entry_name(item, keys) for item in items if isinstance(item, dict)]
        why = "no entry" if not matches else f"{len(matches)} entries"
        raise ConfigError(f"--set {assignment!r}: {why} of {list_name} named {part!r}; its entries: "
                          f"{', '.join(str(n) for n in names) or 'none'} (or address one by index)")
    return matches[0]


def _entry_name(item: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """A list entry's name: the first of `keys` it sets (a method: its label, else its name)."""
    return next((item[k] for k in keys if item.get(k) is not None), None)
