"""One `pad-harness run` per run directory at a time.

The main process of a run holds an exclusive `flock` on `RUN_DIR/.pad-harness.lock` for the whole run and
writes who it is into the file (pid, host, start time, command). A second run on the same directory stops
at once with one message naming the holder. The OS drops the lock when its process dies, however it dies
(SIGKILL, OOM), so a dead holder never blocks a rerun and nothing has to be cleaned up by hand. The workers
of a multi-process launch (harness/processes.py) do not lock: their main process holds it for the launch.
A file system without `flock` support gets a warning and no lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger(__name__)

LOCK_NAME = ".pad-harness.lock"


class RunDirBusyError(HarnessError):
    """Another run holds the run directory."""


@contextmanager
def run_dir_lock(run_dir: Path, *, take: bool = True) -> Iterator[None]:
    """Hold the run directory for the body; `take=False` (a worker process) holds nothing."""
    if not take:
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise RunDirBusyError(busy_message(run_dir, read_holder(path))) from None
        except OSError as exc:  # e.g. ENOLCK on a file system without locks
            log.warning("cannot lock %s (%s): nothing stops a second run on this directory", path, exc.strerror)
            locked = False
        if not locked:
            yield
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "command": " ".join(["pad-harness", *sys.argv[1:]])[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still ours: nobody reads a finished run as the holder
    finally:
        os.close(fd)  # releases the flock


def read_holder(path: Path, wait_s: float = 1.0) -> dict[str, Any]:
    """Who holds the lock (it writes itself in just after locking, so an empty file is retried briefly)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.05)


def busy_message(run_dir: Path, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    since = f", since {holder['started_at']}" if holder.get("started_at") else ""
    text = (f"run directory {run_dir} is in use by another pad-harness run (pid {pid} on host {host}{since}); "
            f"wait for it to finish (or stop it), or pass another --run-dir")
    if host != socket.gethostname():
        text += (f"; if that process is gone, its host still holds the lock (network file system): "
                 f"delete {run_dir / LOCK_NAME} and rerun")
    elif isinstance(pid, int) and not _alive(pid):
        text += f"; pid {pid} has exited but a process it started still holds the lock: stop that process"
    return text


def _alive(pid: int) -> bool:
    from harness.store import pid_alive

    return pid_alive(pid)
