"""Model handles: which model a stage means, without loading it.

A handle is a spec (what to load), a cheap identity (what cache keys hold) and, for a trained row, the
train artifact's directory (its OWN weights). Every consumer gets models from a handle through the run's
`ModelPool` (harness.models.pool), so a backend that loads weights from disk (vLLM) is pointed at the
trained weights by the handle itself: no caller can hand it the base student by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import ModelSpec


@dataclass(frozen=True)
class ModelHandle:
    name: str  # "teacher", "student", or a trained row's "<row>-seed<k>"
    spec: ModelSpec  # what is loaded (a trained row: the student it started from)
    key: dict[str, Any] = field(compare=False)  # cache-key identity: {"teacher": fp} | {"student": fp} | {"trained": k}
    weights_dir: Path | None = None  # a trained row: the train artifact's directory (its weights)
    train_key: str | None = None
    external: bool = False  # a model of an `external:` row (the pool holds one at a time)

    @property
    def trained(self) -> bool:
        return self.weights_dir is not None


def trained_identity(base: dict[str, Any], train_key: str, weights_dir: Path) -> dict[str, Any]:
    """A trained row's identity: the base student's tokenizer, template, context and dtype, and its OWN
    weights, the train artifact's directory (a backend that loads weights from disk, vLLM, must load these,
    not the base model's `path`). Not the base's `quantization`: a QLoRA student's trained weights are merged
    into an unquantized copy of its base (harness.training.lora); the train key still names the quantized base."""
    ident = {key: value for key, value in base.items() if key not in ("path", "revision", "weights", "quantization")}
    ident.update({"trained": train_key, "path": str(weights_dir)})
    if base.get("path") is not None:
        ident["tokenizer_path"] = base["path"]
        if base.get("source") == "hf" and base.get("revision"):
            ident["tokenizer_revision"] = base["revision"]
    return ident
