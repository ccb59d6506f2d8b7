"""Files and directories made through `tempfile` get the permissions `open()` and `mkdir()` would give them.

`tempfile.mkstemp` creates a file 0600 and `tempfile.mkdtemp` a directory 0700, whatever the umask, so a
report or an artifact written atomically (temp name, then rename) would stay private to its owner while
every file written directly is shared as the umask allows. Call `honour_umask` right after creating one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (reading it means setting it: done under a lock and set straight back)."""
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> None:
    """Give `path` the mode a plain `open()` (file: 0o666) or `mkdir()` (directory: 0o777) would have."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())
