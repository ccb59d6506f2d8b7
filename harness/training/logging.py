"""Training metrics: JSONL always; TensorBoard and Weights & Biases when installed and asked for.

The JSONL file in the work directory is appended (and flushed) every step so a live run can be
followed with `tail -f`; on resume it is rewritten from the rows restored from the checkpoint, so it
never holds steps that the resumed run will redo. A requested but missing backend is reported once
in plain words and training goes on: a logging extra must never cost a finished run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from harness.config import LoggingConfig

log = logging.getLogger("harness.training")


class MetricsLogger:
    def __init__(self, path: Path, config: LoggingConfig | None, run_name: str, run_config: dict[str, Any],
                 enabled: bool = True) -> None:
        self.path = Path(path)
        self.config = config or LoggingConfig.model_validate({})
        self.enabled = enabled  # only the main process writes
        self.messages: list[str] = []
        self._tb: Any = None
        self._wandb: Any = None
        if not enabled:
            return
        if self.config.tensorboard:
            self._tb = self._open_tensorboard(run_name)
        if self.config.wandb:
            self._wandb = self._open_wandb(run_name, run_config)

    def note(self, message: str) -> None:
        self.messages.append(message)
        log.warning(message)

    def _open_tensorboard(self, run_name: str) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.note("logging.tensorboard is on but the `tensorboard` package is not installed "
                       "(pip install tensorboard); metrics are still written to metrics.jsonl")
            return None
        return SummaryWriter(log_dir=str(self.path.parent / "tensorboard" / run_name))

    def _open_wandb(self, run_name: str, run_config: dict[str, Any]) -> Any:
        try:
            import wandb
        except ImportError:
            self.note("logging.wandb is on but the `wandb` package is not installed (pip install wandb); "
                       "metrics are still written to metrics.jsonl")
            return None
        try:
            return wandb.init(project=self.config.wandb_project, name=run_name, config=run_config,
                              dir=str(self.path.parent), resume="allow")
        except Exception as exc:  # no login, no network: say so, keep training
            self.note(f"Weights & Biases could not start ({type(exc).__name__}: {exc}); run `wandb login` or "
                       f"set WANDB_MODE=offline; metrics are still written to metrics.jsonl")
            return None

    def restart(self, rows: list[dict[str, Any]]) -> None:
        """Start the live file over with the rows a resumed run keeps."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        step = int(row["step"])
        if step % self.config.every and step != 1:
            return
        numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in numeric.items():
                self._tb.add_scalar(f"train/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in numeric.items()}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
