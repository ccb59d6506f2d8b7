"""Paper-reported reference numbers (`leaderboards/paper/*.yaml`), shown beside the reproduced ones.

A reference file lists, per leaderboard row, values keyed by leaderboard column key ("<benchmark>.<metric>",
see `Benchmark.columns`), each with the id of the source it was read from:

    experiments: [my-experiment]            # experiment names this reference applies to
    sources: {readme: {citation: ..., url: ...}}
    rows:
      my-method: {my_benchmark.win_rate: {value: 45.73, source: readme}}

A number no source gives is simply absent: the report leaves that cell empty rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

# Where references live: the checkout's leaderboards/paper (cwd first, so a user's copy wins).
DEFAULT_PAPER_DIRS = (
    Path("leaderboards/paper"),
    Path(__file__).resolve().parents[2] / "leaderboards" / "paper",
)


@dataclass(frozen=True)
class PaperReference:
    path: Path
    title: str
    experiments: tuple[str, ...]
    setting: str
    sources: dict[str, dict[str, Any]]
    rows: dict[str, dict[str, dict[str, Any]]]  # row -> column key -> {value, source, note?}

    def value(self, row: str, key: str) -> dict[str, Any] | None:
        return self.rows.get(row, {}).get(key)

    def keys(self) -> list[str]:
        seen: list[str] = []
        for values in self.rows.values():
            seen.extend(k for k in values if k not in seen)
        return seen

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "title": self.title,
            "experiments": list(self.experiments),
            "setting": self.setting,
            "sources": self.sources,
            "rows": self.rows,
        }


def load_reference(path: Path) -> PaperReference:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the paper reference: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a paper reference must be a YAML mapping")
    sources = data.get("sources") or {}
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for row, values in (data.get("rows") or {}).items():
        for key, entry in (values or {}).items():
            if not isinstance(entry, dict) or "value" not in entry or "source" not in entry:
                raise ConfigError(f"{path}: rows.{row}.{key} needs both `value` and `source`")
            if entry["source"] not in sources:
                raise ConfigError(
                    f"{path}: rows.{row}.{key}: unknown source {entry['source']!r}; "
                    f"declare it under `sources` (known: {sorted(sources)})"
                )
            if not isinstance(entry["value"], (int, float)):
                raise ConfigError(f"{path}: rows.{row}.{key}: value must be a number, got {entry['value']!r}")
            rows.setdefault(str(row), {})[str(key)] = dict(entry)
    return PaperReference(
        path=Path(path),
        title=str(data.get("title", "")),
        experiments=tuple(str(e) for e in data.get("experiments") or ()),
        setting=str(data.get("setting", "")),
        sources=dict(sources),
        rows=rows,
    )


def find_reference(experiment_name: str, paper_dirs: Iterable[Path] | None = None) -> PaperReference | None:
    """The reference whose `experiments` names this experiment (or whose file stem is its name)."""
    for directory in paper_dirs if paper_dirs is not None else DEFAULT_PAPER_DIRS:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            ref = load_reference(path)
            if experiment_name in ref.experiments or path.stem == experiment_name:
                return ref
    return None
