"""Small pieces every official answers/judgements file format shares (harness.benchmarks.*_files)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

SHORTUUID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # shortuuid's default


def answer_id(model: str, question_id: Any) -> str:
    """A 22-character id in shortuuid's alphabet, as the official tools' random `shortuuid.uuid()`, but
    derived from the model and the question so that exporting one run twice writes the same bytes."""
    number = int.from_bytes(hashlib.sha256(f"{model}\0{question_id}".encode()).digest()[:16], "big")
    digits = []
    for _ in range(22):  # 57**22 > 2**128: every 128-bit number fits, as in shortuuid.encode
        number, digit = divmod(number, len(SHORTUUID_ALPHABET))
        digits.append(SHORTUUID_ALPHABET[digit])
    return "".join(reversed(digits))


def path_component(name: str) -> str:
    """A model or judge name as one folder/file name. The official tools format the name into the path as it
    is, which nests folders for a hub id like 'org/model'; the records keep the full name."""
    safe = re.sub(r"[^\w.+-]", "_", name)
    return "_" if safe in ("", ".", "..") else safe
