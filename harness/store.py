"""The artifact store: every stage output lives in a directory keyed by a hash of exactly its inputs.

    run_dir/artifacts/<stage>/<label>-<key>/      finished artifact (with manifest.json)
    run_dir/artifacts/<stage>/.tmp-<label>-<key>-p<pid>@<host>-*/  being written by that process
    run_dir/artifacts/<stage>/.damaged-<label>-<key>-<time>/       found damaged, kept aside for a look

A finished artifact is never rewritten, so a rerun skips it; an interrupted stage leaves only a temp
directory, which a later write of the same artifact discards once its owner process is dead (a live
owner's is never touched; training resumes from its checkpoints, which live in `run_dir/work/`). The key
covers the stage's code version, so a change in how a stage computes invalidates exactly that stage and
what depends on it.

The manifest lists every file the stage wrote (relative path, size, xxh3-128 checksum). `done` checks
presence and sizes (a stat per file); `verify()` also checks the checksums and is what a stage's consumer
calls before reading the files (harness.integrity), once per process per artifact. Files added after the
manifest are not checked. Manifests without a file list (made by pad-harness before it wrote one) are
accepted unverified, with one warning line per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from harness import textfiles
from harness.errors import HarnessError
from harness.fsmode import honour_umask
from harness.runtime_facts import runtime_facts

log = logging.getLogger(__name__)

# Measured here: xxh3-128 15.5 GB/s in memory (sha256 with SHA-NI 1.6, blake2b 0.8), so reading the file
# is the whole cost of a check (warm page cache ~8 GB/s, a cold disk ~0.5 GB/s).
CHECKSUM = "xxh3_128"
_CHUNK = 8 << 20


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON-serialisable for hashing: {type(obj).__name__}")


def hash_inputs(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    honour_umask(tmp)  # mkstemp makes it 0600; a report is shared as the umask allows
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    honour_umask(tmp)  # mkstemp makes it 0600; a report is shared as the umask allows
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """An artifact's JSONL file, read by the harness's one JSONL reader (`harness.textfiles.read_jsonl`):
    a damaged line is one error naming the file and the line."""
    return textfiles.read_jsonl(path, "run artifact JSONL file")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def file_checksum(path: Path, *, fsync: bool = False) -> str:
    digest = xxhash.xxh3_128()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
        if fsync:  # the data is on disk before the rename makes the artifact visible
            os.fsync(fh.fileno())
    return digest.hexdigest()


def list_files(root: Path, *, fsync: bool = False) -> dict[str, dict[str, Any]]:
    """Every regular file under `root` but its manifest: relative path -> size and checksum."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel != "manifest.json":
            files[rel] = {"bytes": path.stat().st_size, CHECKSUM: file_checksum(path, fsync=fsync)}
    return files


# Verified files per artifact in this process: (manifest's identity, relative paths already checked).
_VERIFIED: dict[str, tuple[tuple[int, int, int], set[str]]] = {}
_LEGACY_WARNED: list[str] = []


@dataclass(frozen=True)
class Artifact:
    stage: str
    label: str
    key: str
    path: Path
    inputs: dict[str, Any]

    @property
    def done(self) -> bool:
        """Finished and whole by a cheap check: the manifest and every file it lists, at its size."""
        return self.problem() is None

    def problem(self, checksums: bool = False, skip_suffixes: tuple[str, ...] = ()) -> str | None:
        """What is wrong with this artifact on disk (None when nothing is); `checksums` reads every file."""
        manifest_path = self.path / "manifest.json"
        try:
            files = json.loads(manifest_path.read_text()).get("files")
        except FileNotFoundError:
            return "no manifest.json (unfinished)"
        except (OSError, ValueError, AttributeError) as exc:
            return f"manifest.json unreadable ({type(exc).__name__})"
        if files is None:
            return None  # legacy manifest: nothing to check against (see verify)
        if not isinstance(files, dict) or not all(isinstance(e, dict) and ".." not in Path(rel).parts
                                                  and not Path(rel).is_absolute() for rel, e in files.items()):
            return "manifest.json has an unreadable file list"
        for rel, entry in files.items():
            try:
                size = (self.path / rel).stat().st_size
            except OSError:
                return f"{rel} is missing"
            if size != entry.get("bytes"):
                return f"{rel} has {size} bytes, its manifest says {entry.get('bytes')}"
        if checksums:
            return self._check_sums(manifest_path, files, skip_suffixes)
        return None

    def _check_sums(self, manifest_path: Path, files: dict[str, Any], skip_suffixes: tuple[str, ...]) -> str | None:
        st = manifest_path.stat()
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _VERIFIED.get(str(self.path))
        checked = cached[1] if cached is not None and cached[0] == ident else set()
        for rel, entry in files.items():
            if rel in checked or rel.endswith(skip_suffixes) or CHECKSUM not in entry:
                continue
            if file_checksum(self.path / rel) != entry[CHECKSUM]:
                _VERIFIED.pop(str(self.path), None)
                return f"{rel} does not match its checksum"
            checked.add(rel)
        _VERIFIED[str(self.path)] = (ident, checked)
        return None

    def verify(self, skip_suffixes: tuple[str, ...] = ()) -> str | None:
        """Full check before the files are used: sizes and checksums (each file hashed once per process).
        Returns what is wrong, or None. `skip_suffixes`: files not read by this consumer (e.g. weights)."""
        problem = self.problem(checksums=True, skip_suffixes=skip_suffixes)
        if problem is None and str(self.path) not in _VERIFIED:  # a legacy manifest: one line per process
            _VERIFIED[str(self.path)] = ((0, 0, 0), set())
            if not _LEGACY_WARNED:
                _LEGACY_WARNED.append(str(self.path))
                log.warning("artifacts made by an older pad-harness have no file list in their manifest (first: "
                            "%s); they are used unverified (delete one to rebuild it with a file list)", self.path)
        return problem

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())

    def file(self, name: str) -> Path:
        return self.path / name


class ArtifactStore:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "artifacts"

    def artifact(self, stage: str, label: str, inputs: dict[str, Any]) -> Artifact:
        key = hash_inputs({"stage": stage, **inputs})
        safe_label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
        return Artifact(stage, label, key, self.root / stage / f"{safe_label}-{key}", inputs)

    def work_dir(self, artifact: Artifact) -> Path:
        """Scratch space that survives interruption (training checkpoints, partial caches)."""
        path = self.work_path(artifact)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def work_path(self, artifact: Artifact) -> Path:
        """Where `work_dir` is, without making it."""
        return self.run_dir / "work" / artifact.stage / artifact.path.name

    def set_aside(self, artifact: Artifact, problem: str) -> Path:
        """Move a damaged artifact out of the way (kept for a look) so that it is rebuilt."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = artifact.path.parent / f".damaged-{artifact.path.name}-{stamp}-{os.getpid()}"
        os.replace(artifact.path, aside)
        _VERIFIED.pop(str(artifact.path), None)
        log.warning("%s is damaged (%s): moved to %s and rebuilding it", artifact.path, problem, aside.name)
        return aside

    @contextmanager
    def writing(self, artifact: Artifact, extra_manifest: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a temp directory; on success write manifest.json and rename it into place atomically."""
        artifact.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in artifact.path.parent.glob(f".tmp-{artifact.path.name}-*"):
            if _owner_is_dead(stale.name[len(f".tmp-{artifact.path.name}-"):]):
                shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run
        if artifact.path.exists() and (problem := artifact.problem()) is not None:
            self.set_aside(artifact, problem)  # e.g. a truncated file
        tmp = Path(tempfile.mkdtemp(dir=artifact.path.parent, prefix=f".tmp-{artifact.path.name}-{_owner_tag()}-"))
        honour_umask(tmp)  # mkdtemp makes it 0700
        started = time.time()
        manifest: dict[str, Any] = dict(extra_manifest or {})
        try:
            yield tmp
            existing = tmp / "manifest.json"
            if existing.is_file():  # the stage wrote its own (accounting etc.); merge ours in
                manifest = {**manifest, **json.loads(existing.read_text())}
            manifest.setdefault("runtime", runtime_facts())  # what decides the low bits (harness.runtime_facts)
            manifest.update(
                stage=artifact.stage,
                label=artifact.label,
                key=artifact.key,
                inputs=artifact.inputs,
                wall_time_s=manifest.get("wall_time_s", round(time.time() - started, 3)),
                finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                files=list_files(tmp, fsync=True),
            )
            write_json_atomic(tmp / "manifest.json", manifest)
            if artifact.path.exists() and artifact.done:  # finished concurrently: keep the first, drop ours
                shutil.rmtree(tmp)
            else:
                if artifact.path.exists():
                    self.set_aside(artifact, artifact.problem() or "incomplete")
                try:
                    os.replace(tmp, artifact.path)
                except OSError:
                    if not artifact.done:
                        raise
                    shutil.rmtree(tmp)  # another process stored the same artifact between the check and now
                _fsync_dir(artifact.path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname()) or "host"


def _owner_tag() -> str:
    return f"p{os.getpid()}@{_host()}"


def _owner_is_dead(suffix: str) -> bool:
    """Whether the process that named a temp dir `...-p<pid>@<host>-<random>` is gone. Another host's
    process cannot be checked from here: kept. A name without an owner (older versions): stale."""
    match = re.fullmatch(r"p(\d+)@([A-Za-z0-9._]+)-[A-Za-z0-9_]+", suffix)
    if match is None:
        return True
    if match.group(2) != _host():
        return False
    return not pid_alive(int(match.group(1)))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def concat_jsonl(parts: list[Path], name: str, out: Path) -> None:
    """The parts' `name` files, one after another, as `out/name` (bytes unchanged)."""
    with (out / name).open("wb") as dst:
        for part in parts:
            with (part / name).open("rb") as src:
                shutil.copyfileobj(src, dst)


def concat_json_lists(parts: list[Path], name: str, out: Path) -> None:
    """`name` is a JSON object of lists in every part: the lists concatenated, key by key. One part is
    copied as it is (a single-chunk stage writes exactly what it always wrote)."""
    merged: dict[str, list[Any]] = {}
    for part in parts:
        data = json.loads((part / name).read_text())
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise HarnessError(f"{part / name}: not a JSON object of lists, so chunks cannot be joined")
        for key, values in data.items():
            merged.setdefault(key, []).extend(values)
    if len(parts) == 1:
        shutil.copyfile(parts[0] / name, out / name)  # exactly what a single-chunk stage always wrote
        return
    write_json_atomic(out / name, merged)
