"""What, besides an artifact's inputs, decides the low bits of its numbers: recorded in every manifest.

Artifact keys hash the inputs (models, data, settings, code version), not the machine: the same key is the
same computation, but its float results are bitwise equal only where the process computed them the same
way. Measured on a tiny pad/kd/dpo run: one process at 2 CPU threads stored `student_logprobs` values that
differ (4 of 48, by up to 7.6e-6) from one at 1 thread (torchrun's default per process), and so different
DPO weights and answers, under the same keys. So each manifest records `runtime` (`runtime_facts`), and a run
directory holding artifacts made under different facts is flagged (`mixed_runtime`: `--dry-run` and the
report). What holds under which conditions: docs/fidelity.md.

`LOW_BIT_FACTS` are the facts compared: the torch build, the device (and the CPU's vector instruction set),
the intra-op thread count where the CPU computes (not compared for a process on a GPU), and the flags that
select kernels (deterministic algorithms, TF32, cuDNN benchmark, fp32 matmul precision).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

# The facts whose difference may change low bits; the rest (library versions, MKL/oneDNN) is context.
LOW_BIT_FACTS = ("torch", "device", "cpu_capability", "threads", "deterministic", "tf32_matmul", "tf32_cudnn",
                 "cudnn_benchmark", "float32_matmul_precision")


def runtime_facts() -> dict[str, Any]:
    """This process's facts (cheap: no device work)."""
    import torch

    cuda = torch.cuda.is_available()
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "device": f"cuda:{torch.cuda.get_device_name(torch.cuda.current_device())}" if cuda else "cpu",
        "cpu_capability": _cpu_capability(torch),
        "threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda": torch.version.cuda,
    }
    if cuda:
        facts |= {"cudnn": torch.backends.cudnn.version(), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                  "tf32_cudnn": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                  "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    return facts


def _cpu_capability(torch: Any) -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())  # e.g. AVX2, AVX512: which vector kernels run
    except (AttributeError, RuntimeError):
        return None


def low_bits(facts: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The facts two artifacts must share for their floats to be comparable bit for bit. The thread count is
    left out for a process on a GPU: its numbers come from the GPU (the host only moves and prints them)."""
    on_gpu = str(facts.get("device", "")).startswith("cuda")
    return tuple((name, facts.get(name)) for name in LOW_BIT_FACTS
                 if name in facts and not (on_gpu and name == "threads"))


def _each(runtime: Any) -> list[dict[str, Any]]:
    """A manifest's `runtime`: one process's facts, or a list (a stage whose chunks several processes made)."""
    if isinstance(runtime, dict):
        return [runtime]
    if isinstance(runtime, list):
        return [r for r in runtime if isinstance(r, dict)]
    return []


def distinct(facts: Iterable[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """Several processes' facts as a manifest records them: one dict when they agree, else the distinct ones."""
    out: list[dict[str, Any]] = []
    for f in facts:
        if f not in out:
            out.append(f)
    return out[0] if len(out) == 1 else out


def mixed_runtime(manifests: Iterable[tuple[str, dict[str, Any]]],
                  current: dict[str, Any] | None = None) -> str | None:
    """One warning line when the (name, manifest) pairs were made under different low-bit facts (or differ
    from `current`, this process's, when it is about to add artifacts), else None. Manifests without a
    `runtime` (made before it was recorded) are not judged."""
    groups: dict[tuple[tuple[str, Any], ...], list[str]] = {}
    for name, manifest in manifests:
        for facts in _each(manifest.get("runtime")):
            names = groups.setdefault(low_bits(facts), [])
            if name not in names:
                names.append(name)
    if current is not None and groups:
        groups.setdefault(low_bits(current), []).append("(this process)")
    if len(groups) < 2:
        return None
    differing = [name for name in LOW_BIT_FACTS if len({dict(key).get(name) for key in groups}) > 1]
    parts = []
    for key, names in groups.items():
        shown = ", ".join(f"{n}={dict(key).get(n)}" for n in differing)
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{shown} ({listed})")
    return (f"this run directory mixes artifacts made under different {', '.join(differing)}: " + "; ".join(parts)
            + ". Their floats can differ in the last bits under the same keys; equal results are expected only "
              "between artifacts made alike (docs/fidelity.md)")



def _finished_manifests(artifacts: Iterable[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for art in artifacts:
        if art.done:
            try:
                out.append((f"{art.stage} {art.label}", art.manifest()))
            except (OSError, ValueError):
                continue  # unreadable: the integrity checks say so when it is read
    return out


def plan_runtime_warning(steps: Iterable[Any]) -> str | None:
    """`mixed_runtime` over a plan's finished steps (`harness.stages.base.Stage`s); when some are still to
    run, this process's facts count too (it would add artifacts made under them)."""
    steps = list(steps)
    adding = any(not step.done for step in steps)
    return mixed_runtime(_finished_manifests(step.artifact for step in steps), runtime_facts() if adding else None)


def plan_runtime(steps: Iterable[Any]) -> dict[str, Any]:
    """For a report's provenance: the distinct facts the finished steps were made under, and the warning."""
    manifests = _finished_manifests(step.artifact for step in steps)
    facts = distinct(f for _, m in manifests for f in _each(m.get("runtime")))
    warning = mixed_runtime(manifests)
    return {"facts": facts, **({"warning": warning} if warning else {})}  # no empty "warning" line in reports
