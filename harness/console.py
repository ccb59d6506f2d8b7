"""What the command line prints besides results: progress bars, log lines from libraries, error lines.

- Progress bars: one switch (`configured(quiet=True)`) turns off every bar of a run, the harness's own
  (`bar()`), transformers' and huggingface_hub's; `pad-harness run --quiet` prints only the results.
- Logs: one handler on the root logger at WARNING (INFO with `--verbose`). Libraries that raise the root
  logger's level on import (alpaca_eval sets it to INFO) therefore cannot flood the terminal, and lines a
  library logs through the root logger itself (alpaca_eval: one per unparsable judgement, which the report
  counts) appear only with `--verbose` unless they are errors. The `pkg_resources` deprecation warning
  alpaca_eval triggers on import is hidden the same way.
- Errors: `print_error` closes the progress bars left open by the failed stage first, so the message
  starts on a line of its own instead of after the last bar's text.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

_bars = True


def bars_enabled() -> bool:
    return _bars


def bar(total: int, desc: str, unit: str = "it", **kwargs: Any) -> Any:
    """A tqdm progress bar on stderr, disabled when the run is quiet."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not _bars, **kwargs)


class _RootLoggerNoise(logging.Filter):
    """Drops records a library logs through the root logger itself (the harness never does) below ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.ERROR


@contextmanager
def configured(*, quiet: bool = False, verbose: bool = False) -> Iterator[None]:
    """Progress bars and logging for one command; everything is restored on exit (tests call the CLI
    in-process)."""
    global _bars
    root = logging.getLogger()
    handler = logging.StreamHandler()  # sys.stderr as it is now
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        handler.addFilter(_RootLoggerNoise())
    saved_bars, saved_level = _bars, root.level
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        if not verbose:
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        if quiet:
            stack.callback(_library_bars(enabled=False))
        _bars = not quiet
        root.addHandler(handler)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(saved_level)
            _bars = saved_bars


def _library_bars(enabled: bool) -> Any:
    """Turn transformers' and huggingface_hub's progress bars on or off; returns the undo."""
    undo = []
    try:
        from transformers.utils import logging as hf_logging

        was = hf_logging.is_progress_bar_enabled()
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        undo.append(hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)
    except ImportError:
        pass
    try:
        from huggingface_hub import utils as hub_utils

        was_disabled = hub_utils.are_progress_bars_disabled()
        (hub_utils.enable_progress_bars if enabled else hub_utils.disable_progress_bars)()
        undo.append(hub_utils.disable_progress_bars if was_disabled else hub_utils.enable_progress_bars)
    except ImportError:
        pass

    def restore() -> None:
        for step in undo:
            step()

    return restore


def close_open_bars() -> None:
    """Close every progress bar still open (a stage that failed mid-way leaves its bar open): each ends its
    line, so what is printed next starts on a fresh one, and none is redrawn later."""
    tqdm_module = sys.modules.get("tqdm.std")
    if tqdm_module is None:
        return
    for open_bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
        try:
            open_bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error being printed
            pass


def print_error(message: str) -> None:
    close_open_bars()
    sys.stdout.flush()
    print(f"pad-harness: error: {message}", file=sys.stderr, flush=True)
