"""Honest accounting of what a training run cost, so "matched budget" can be checked, not trusted.

Token counts are what was actually processed (no padding). FLOPs use the standard dense-transformer
estimate: 6 * N * tokens for a forward+backward pass, 2 * N * tokens for a forward-only pass or one
generated token (N = parameters; attention's sequence-length term is ignored, which is small at the
lengths this harness trains on). Teacher work is split into the shared precompute (attributed in full
to every method that uses it: it is what the method would have to pay alone) and online work done
during training (on-policy methods).
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# Dense (no sparsity) bf16 tensor-core peak FLOP/s per GPU, from the vendors' data sheets. Matched by
# substring of `torch.cuda.get_device_name()`, most specific first.
GPU_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("A6000", 155e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),  # fp16: V100 has no bf16
    ("T4", 65e12),  # fp16
)

PRECOMPUTE_KEYS = (
    "teacher_forward_tokens",
    "teacher_generation_tokens",
    "student_forward_tokens",
    "student_generation_tokens",
    "teacher_params",
)


def peak_flops_for(device_name: str) -> float | None:
    for key, flops in GPU_PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def flops_train(params: int, tokens: int, trainable: int | None = None) -> float:
    """6 N per trained token: forward 2 N, backward 4 N (gradients of activations and of weights, 2 N each).
    With frozen weights (a LoRA student: `trainable` adapter parameters on a frozen base of `params`) the
    base's weight gradients are never computed: 4 N + 6 N_trainable (the adapters' own forward + backward)."""
    if trainable is None:
        return 6.0 * params * tokens
    return (4.0 * params + 6.0 * trainable) * tokens


def flops_forward(params: int, tokens: int) -> float:
    return 2.0 * params * tokens


def current_peak_memory(device: torch.device | str) -> tuple[int, str]:
    """(bytes, what was measured): CUDA max allocated on a GPU, else the process's peak RSS."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return int(peak if sys.platform == "darwin" else peak * 1024), "cpu_peak_rss"


@dataclass
class Accounting:
    student_params: int = 0
    teacher_params: int = 0
    student_trainable_params: int | None = None  # a LoRA student's adapters (None: every parameter trains)
    # Student work during training. Backward tokens <= forward tokens (forward-only passes, e.g. an
    # online reference score, add to forward only).
    student_forward_tokens: int = 0
    student_backward_tokens: int = 0
    student_generation_tokens_online: int = 0  # on-policy sampling from the student
    # Teacher (and initial-student) work shared across methods, attributed to this one.
    teacher_forward_tokens_precompute: int = 0
    teacher_generation_tokens_precompute: int = 0
    student_forward_tokens_precompute: int = 0  # e.g. reference log-probs of the initial student
    student_generation_tokens_precompute: int = 0  # sampling the responses with the student
    # Teacher work during training (on-policy methods).
    teacher_forward_tokens_online: int = 0
    teacher_generation_tokens_online: int = 0
    optimizer_steps: int = 0
    micro_batches: int = 0
    prompts_seen: int = 0
    wall_time_s: float = 0.0
    train_time_s: float = 0.0  # time inside optimizer steps (excludes setup, checkpoints, saving)
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""
    device_name: str = "cpu"
    num_processes: int = 1
    peak_flops_per_device: float | None = None
    stop_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # --- counters the trainer and methods call -------------------------------------------------
    def add_student_train(self, tokens: int) -> None:
        self.student_forward_tokens += tokens
        self.student_backward_tokens += tokens

    def add_student_forward(self, tokens: int) -> None:
        self.student_forward_tokens += tokens

    def add_student_generation(self, tokens: int) -> None:
        self.student_generation_tokens_online += tokens

    def add_teacher_forward(self, tokens: int) -> None:
        self.teacher_forward_tokens_online += tokens

    def add_teacher_generation(self, tokens: int) -> None:
        self.teacher_generation_tokens_online += tokens

    def add_precompute(self, precompute: dict[str, Any] | None) -> None:
        """Attribute the shared precompute (computed once, used by this method) to this run."""
        if not precompute:
            return
        # Keys this class does not model are kept (never dropped silently, never fatal to a finished run).
        other = {k: v for k, v in precompute.items() if k not in PRECOMPUTE_KEYS}
        if other:
            self.extra.setdefault("precompute_other", {}).update(other)
        self.teacher_forward_tokens_precompute += int(precompute.get("teacher_forward_tokens", 0))
        self.teacher_generation_tokens_precompute += int(precompute.get("teacher_generation_tokens", 0))
        self.student_forward_tokens_precompute += int(precompute.get("student_forward_tokens", 0))
        self.student_generation_tokens_precompute += int(precompute.get("student_generation_tokens", 0))
        if precompute.get("teacher_params"):
            self.teacher_params = int(precompute["teacher_params"])

    def update_peak_memory(self, device: torch.device | str) -> None:
        peak, kind = current_peak_memory(device)
        self.peak_memory_bytes = max(self.peak_memory_bytes, peak)
        self.peak_memory_kind = kind

    # --- derived numbers -----------------------------------------------------------------------
    @property
    def student_train_flops(self) -> float:
        """FLOPs the student spent during training (what a FLOP cap limits, together with online teacher)."""
        forward_only = self.student_forward_tokens - self.student_backward_tokens
        return (
            flops_train(self.student_params, self.student_backward_tokens, self.student_trainable_params)
            + flops_forward(self.student_params, forward_only + self.student_generation_tokens_online)
        )

    @property
    def teacher_online_flops(self) -> float:
        tokens = self.teacher_forward_tokens_online + self.teacher_generation_tokens_online
        return flops_forward(self.teacher_params, tokens)

    @property
    def training_flops(self) -> float:
        return self.student_train_flops + self.teacher_online_flops

    @property
    def precompute_flops(self) -> float:
        teacher = self.teacher_forward_tokens_precompute + self.teacher_generation_tokens_precompute
        student = self.student_forward_tokens_precompute + self.student_generation_tokens_precompute
        return flops_forward(self.teacher_params, teacher) + flops_forward(self.student_params, student)

    @property
    def total_flops(self) -> float:
        return self.training_flops + self.precompute_flops

    @property
    def mfu(self) -> float | None:
        """Model FLOPs utilisation of the training loop on GPU (None on CPU or an unknown GPU)."""
        if not self.peak_flops_per_device or self.train_time_s <= 0:
            return None
        return self.training_flops / (self.train_time_s * self.peak_flops_per_device * self.num_processes)

    @property
    def train_tokens_per_s(self) -> float | None:
        if self.train_time_s <= 0:
            return None
        return self.student_backward_tokens / self.train_time_s

    @property
    def flops_complete(self) -> bool:
        """False when teacher tokens were counted but the teacher's size is unknown (its FLOPs read 0)."""
        teacher_tokens = (self.teacher_forward_tokens_precompute + self.teacher_generation_tokens_precompute
                          + self.teacher_forward_tokens_online + self.teacher_generation_tokens_online)
        return self.teacher_params > 0 or teacher_tokens == 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            flops_complete=self.flops_complete,
            student_train_flops=self.student_train_flops,
            teacher_online_flops=self.teacher_online_flops,
            training_flops=self.training_flops,
            precompute_flops=self.precompute_flops,
            total_flops=self.total_flops,
            mfu=self.mfu,
            train_tokens_per_s=self.train_tokens_per_s,
            # Totals the leaderboard shows (shared precompute + online work, both attributed here).
            teacher_forward_tokens=self.teacher_forward_tokens_precompute + self.teacher_forward_tokens_online,
            teacher_generation_tokens=(self.teacher_generation_tokens_precompute
                                       + self.teacher_generation_tokens_online),
            flops=self.total_flops,
            gpu_hours=(self.wall_time_s * self.num_processes / 3600.0
                       if str(self.device_name).lower().startswith(("nvidia", "cuda", "gpu")) or
                       self.peak_flops_per_device else None),
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Accounting:
        """Inverse of `to_dict` (derived keys are recomputed, so they are dropped)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def detect_device(device: torch.device | str, num_processes: int = 1) -> dict[str, Any]:
    """Device name and its peak FLOP/s (GPU only), for MFU."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return {"device_name": name, "peak_flops_per_device": peak_flops_for(name), "num_processes": num_processes}
    return {"device_name": f"{device.type} ({os.cpu_count()} cores)", "peak_flops_per_device": None,
            "num_processes": num_processes}
