"""Two rules every module asks of the environment, written once.

- `cache_root()`: where the harness keeps what it builds outside run dirs (de-quantized models, NLTK tables,
  AlpacaEval's length-control data): `$PAD_HARNESS_CACHE`, else `~/.cache/pad-harness`.
- `hub_offline()`: whether the Hugging Face hub must not be asked: any of `HF_HUB_OFFLINE`,
  `TRANSFORMERS_OFFLINE`, `HF_DATASETS_OFFLINE` set to 1/true/yes/on (each library honours its own; the
  harness treats them as one switch, so no path tries the network while another refuses it).
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
TRUE = frozenset({"1", "true", "yes", "on"})


def cache_root() -> Path:
    env = os.environ.get("PAD_HARNESS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pad-harness"


def hub_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in TRUE for name in OFFLINE_VARIABLES)
