"""The judge cache's SQLite file, which survives being truncated or corrupted.

Opening runs `PRAGMA quick_check` (well under a second for a cache of hundreds of MB). A file that fails it,
or any later read or write that reports corruption (SQLITE_CORRUPT, SQLITE_NOTADB), is moved aside as
`<name>.corrupt-<time>` (with its WAL), every row still readable is copied into a fresh file, one warning
line says how many were kept, and the judgements lost are asked again. A busy or full disk is not corruption
and is raised as it is.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_COLUMNS = "key, identity, request, response, created_at"
_PROBE_MISSES = 1000  # rowids tried past the last readable one when the table's end cannot be read


def is_corruption(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code is None or (code & 0xFF) in _CORRUPT_CODES


class CacheFile:
    """One connection to the cache file; reopened when the file was replaced (salvaged by another one)."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = Path(path)
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open(check=True)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self.salvage(exc)

    def _open(self, check: bool) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(self.schema)
            conn.commit()
            if check:
                result = conn.execute("PRAGMA quick_check(1)").fetchone()
                if not result or result[0] != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {str(result and result[0])[:200]}")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.inode = os.stat(self.path).st_ino

    def current(self) -> sqlite3.Connection:
        try:
            replaced = os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            replaced = True
        if replaced:
            self.conn.close()
            self._open(check=False)
        return self.conn

    def salvage(self, exc: BaseException) -> None:
        """Move the damaged file aside, copy what is readable into a fresh one, say so in one line."""
        if getattr(self, "conn", None) is not None:
            self.conn.close()
            if os.path.exists(self.path) and os.stat(self.path).st_ino != self.inode:
                self._open(check=False)  # another connection already salvaged it
                return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(f"{self.path}{suffix}"):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        rows = readable_rows(aside)
        for suffix in ("-wal", "-shm"):  # an empty WAL and the shared-memory index say nothing: dropped
            side = Path(f"{aside}{suffix}")
            if side.exists() and (suffix == "-shm" or side.stat().st_size == 0):
                side.unlink()
        self._open(check=False)
        self.conn.executemany(f"INSERT OR REPLACE INTO judgements ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows)
        self.conn.commit()
        log.warning("judge cache %s is damaged (%s): kept it as %s and salvaged %d judgements into a fresh one; "
                    "the rest will be asked again", self.path, str(exc)[:120], aside.name, len(rows))

    def close(self) -> None:
        self.conn.close()


def _pad_truncated(path: Path) -> None:
    """A truncated file is refused whole by SQLite; zero-filled to its recorded size, its surviving pages
    read again (the lost ones read as corrupt and are skipped)."""
    with open(path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    want = page_size * struct.unpack(">I", header[28:32])[0]
    size = os.path.getsize(path)
    if size < want:
        with open(path, "ab") as fh:
            fh.truncate(want)


def readable_rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of `judgements` that can still be read and whose response is JSON."""
    try:
        _pad_truncated(path)
        conn = sqlite3.connect(path)
    except (OSError, sqlite3.Error):
        return []
    rows: dict[int, tuple[Any, ...]] = {}
    try:
        try:
            for row in conn.execute(f"SELECT rowid, {_COLUMNS} FROM judgements"):
                rows[row[0]] = row[1:]
            return _valid(rows)
        except sqlite3.DatabaseError:
            pass
        try:
            high = int(conn.execute("SELECT max(rowid) FROM judgements").fetchone()[0] or 0)
        except sqlite3.DatabaseError:
            high = -1
        rowid, misses = (0 if high >= 0 else max(rows, default=0)), 0
        while (rowid < high) if high >= 0 else (misses < _PROBE_MISSES):
            rowid += 1
            if rowid in rows:
                continue
            try:
                row = conn.execute(f"SELECT {_COLUMNS} FROM judgements WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                row = None
            if row is None:
                misses += 1
            else:
                rows[rowid], misses = row, 0
        return _valid(rows)
    finally:
        conn.close()


def _valid(rows: dict[int, tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out = []
    for row in rows.values():
        try:
            if isinstance(row[0], str) and isinstance(json.loads(row[3]).get("text"), str):
                out.append(row)
        except (TypeError, ValueError, AttributeError):
            continue
    return out
