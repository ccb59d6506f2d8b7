"""The teacher's top-k next-token log-probs over each sampled response (token-level KD), and their compact
storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.config import Truncation
from harness.models.base import LoadedModel
from harness.models.chat import ChatFormatter
from harness.models.scoring import Scorer
from harness.signals.common import SignalResult
from harness.signals.logprobs import scoring_inputs


def teacher_topk(
    teacher: LoadedModel, groups: list[Any], k: int = 20, batch_size: int = 8, max_length: int | None = None,
    max_prompt_length: int | None = None, progress: str | None = "teacher top-k", truncation: Truncation = "per_response",
    cut_as: ChatFormatter | None = None,
) -> SignalResult:
    """Per group {"ids": [LongTensor[T_i, k]] * n, "logprobs": [FloatTensor[T_i, k]] * n}; row t holds the
    teacher's top-k log-probs for predicting response token t (end-of-turn included). `cut_as`: the student's
    chat format (the teacher keeps its whole context; see `scoring_inputs`)."""
    scorer = Scorer(teacher, batch_size=batch_size)
    topk = scorer.topk_groups(scoring_inputs(teacher, groups, max_length, max_prompt_length, truncation, cut_as),
                              k, progress)
    values = [{"ids": [ids for ids, _ in row], "logprobs": [lp for _, lp in row]} for row in topk]
    return SignalResult(values, forward_tokens=scorer.forward_tokens)


def save_topk(path: str | Path, values: list[dict[str, list[torch.Tensor]]]) -> None:
    """Compact safetensors: ids int32 and log-probs float16, all rows concatenated, plus row lengths."""
    from safetensors.torch import save_file

    ids = [t for v in values for t in v["ids"]]
    lps = [t for v in values for t in v["logprobs"]]
    k = ids[0].shape[1] if ids else 0
    tensors = {
        "ids": torch.cat(ids).to(torch.int32) if ids else torch.zeros((0, k), dtype=torch.int32),
        "logprobs": torch.cat(lps).to(torch.float16) if lps else torch.zeros((0, k), dtype=torch.float16),
        "row_lengths": torch.tensor([t.shape[0] for t in ids], dtype=torch.int64),
        "group_sizes": torch.tensor([len(v["ids"]) for v in values], dtype=torch.int64),
    }
    save_file({name: t.contiguous() for name, t in tensors.items()}, str(path))


def load_topk(path: str | Path) -> list[dict[str, list[torch.Tensor]]]:
    from safetensors.torch import load_file

    data = load_file(str(path))
    ids = data["ids"].long().split(data["row_lengths"].tolist())
    lps = data["logprobs"].float().split(data["row_lengths"].tolist())
    out, pos = [], 0
    for size in data["group_sizes"].tolist():
        out.append({"ids": list(ids[pos : pos + size]), "logprobs": list(lps[pos : pos + size])})
        pos += size
    return out
