"""Reading the text files a user gives (experiment YAML, prompt and benchmark JSONL, judgement files).

Every problem ends in one line naming the file, and the line for JSONL, with what to do: a directory
where a file was expected, bytes that are not UTF-8 (UTF-16 is recognised by its byte-order mark), a
line that is not JSON or not a JSON object.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

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
    """(line number, object) for each non-blank line; any other line is one `error` naming file and line."""
    return parse_jsonl(read_utf8(path, what, error), path, what, error)


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
