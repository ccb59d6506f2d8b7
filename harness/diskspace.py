"""Disk space: say before training that it will not fit, and turn a full disk into an error that says what to do.

Trained students and checkpoints are the large files a run writes (a checkpoint holds the weights and
AdamW's two moments, about three times the model). A full disk mid-write used to end in a traceback from
safetensors; now it ends in one message, and every finished artifact stays on disk for the rerun.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from harness.errors import DiskFullError

GB = 1024**3


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def require_free(path: Path, needed: int, purpose: str) -> None:
    free = free_bytes(path)
    if free < needed:
        raise DiskFullError(
            f"{purpose} needs about {needed / GB:.2f} GB free under {path}, but only {free / GB:.2f} GB is "
            f"free. Free some disk space (or point output_dir at a larger disk) and rerun: finished stages "
            f"are kept and skipped.")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from Python, or from a native writer (safetensors' Rust core reports 'os error 28')."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "os error 28" in str(exc)


def disk_full_error(exc: BaseException, where: Path, what: str) -> DiskFullError:
    return DiskFullError(
        f"the disk filled up while writing {what} under {where} ({free_bytes(where) / GB:.2f} GB free now). "
        f"Free some disk space (or point output_dir at a larger disk) and rerun: finished stages are kept "
        f"and skipped, and an interrupted training run resumes from its last checkpoint, if any.")
