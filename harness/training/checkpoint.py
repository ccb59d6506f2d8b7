"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

    work_dir/checkpoints/step-00000012/
        model.safetensors       model weights (tied weights stored once, aliases in the metadata)
        optimizer.safetensors   optimizer state tensors, keyed "<param index>.<name>"
        rng.safetensors         torch CPU (+ CUDA) and numpy RNG states
        state.json              step, optimizer param groups and scalar state, python RNG, trainer state

A checkpoint is written into a temp directory and renamed into place, so a kill while writing leaves
the previous checkpoint intact; a directory named step-* is always complete. Loading uses only
`safetensors` and `json`: nothing from a checkpoint is ever unpickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.errors import HarnessError
from harness.fsmode import honour_umask

CHECKPOINT_DIR = "checkpoints"
KEEP_LAST = 2


def dedupe_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors sharing memory (tied embeddings): keep one name, record the aliases."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_storage: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()), tuple(tensor.shape))
        if key in by_storage and tensor.numel() > 0:
            aliases[name] = by_storage[key]
        else:
            by_storage[key] = name
            kept[name] = tensor.detach().contiguous().cpu()
    return kept, aliases


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def save_model_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    kept, aliases = dedupe_state_dict(state)
    save_tensors(path, kept, metadata={"aliases": json.dumps(aliases)})


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        aliases = json.loads((fh.metadata() or {}).get("aliases", "{}"))
    state = load_file(str(path))
    for name, target in aliases.items():
        state[name] = state[target]
    return state


# --- optimizer ---------------------------------------------------------------------------------
def optimizer_to_files(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# --- RNG ---------------------------------------------------------------------------------------
def rng_to_files(method_rng: random.Random) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(np_keys, dtype=np.uint32).view(np.int32).copy())
    meta = {
        "python": _py_state_to_json(random.getstate()),
        "method": _py_state_to_json(method_rng.getstate()),
        "numpy": {"kind": np_kind, "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
    }
    return tensors, meta


def rng_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any], method_rng: random.Random) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    np_meta = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().view(np.uint32)
    np.random.set_state((np_meta["kind"], keys, np_meta["pos"], np_meta["has_gauss"], np_meta["gauss"]))
    random.setstate(_py_state_from_json(meta["python"]))
    method_rng.setstate(_py_state_from_json(meta["method"]))


def _py_state_to_json(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state_from_json(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], tuple(data[1]), data[2])


# --- checkpoint directories --------------------------------------------------------------------
def checkpoint_root(work_dir: Path) -> Path:
    return Path(work_dir) / CHECKPOINT_DIR


def latest_checkpoint(work_dir: Path) -> Path | None:
    root = checkpoint_root(work_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    return done[-1] if done else None


def save_checkpoint(
    work_dir: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    method_rng: random.Random,
    trainer_state: dict[str, Any],
) -> Path:
    root = checkpoint_root(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-step-{step:08d}-"))
    honour_umask(tmp)  # mkdtemp makes it 0700
    try:
        save_model_state(tmp / "model.safetensors", model_state)
        opt_tensors, opt_meta = optimizer_to_files(optimizer_state)
        save_tensors(tmp / "optimizer.safetensors", opt_tensors)
        rng_tensors, rng_meta = rng_to_files(method_rng)
        save_tensors(tmp / "rng.safetensors", rng_tensors)
        state = {"step": step, "optimizer": opt_meta, "rng": rng_meta, "trainer": trainer_state}
        (tmp / "state.json").write_text(json.dumps(state))
        for f in tmp.iterdir():  # data on disk before the rename makes the checkpoint visible
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (a resumed run): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in root.iterdir() if p.name.startswith("step-"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Everything needed to resume: {'step', 'model', 'optimizer', 'rng_tensors', 'rng', 'trainer'}."""
    state = json.loads((path / "state.json").read_text())
    return {
        "step": int(state["step"]),
        "model": load_model_state(path / "model.safetensors"),
        "optimizer": optimizer_from_files(load_file(str(path / "optimizer.safetensors")), state["optimizer"]),
        "rng_tensors": load_file(str(path / "rng.safetensors")),
        "rng": state["rng"],
        "trainer": state["trainer"],
    }


def remove_checkpoints(work_dir: Path) -> None:
    """Delete every checkpoint of a finished run (its trained model is stored elsewhere)."""
    shutil.rmtree(checkpoint_root(work_dir), ignore_errors=True)


def estimated_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes of the saved model, bytes of one checkpoint): weights once (tied weights count once), plus
    AdamW's two moments per trainable weight in a checkpoint."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights, weights + moments


def bytes_needed(model: torch.nn.Module, checkpoint_every: int, steps_left: int) -> tuple[int, int]:
    """(peak bytes a training run writes, checkpoints on disk at that peak): the trained model, plus the
    checkpoints held at once (none without checkpoint_every; else up to KEEP_LAST kept ones and the one
    being written)."""
    model_bytes, checkpoint_bytes = estimated_bytes(model)
    saves = (steps_left - 1) // checkpoint_every + 1 if checkpoint_every and steps_left else 0
    at_once = min(KEEP_LAST + 1, saves)
    return model_bytes + at_once * checkpoint_bytes, at_once


def clean_partial(work_dir: Path) -> None:
    """Remove temp directories of a checkpoint whose writing was interrupted."""
    root = checkpoint_root(work_dir)
    if root.is_dir():
        for stale in root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)


# --- the trained model written by `train` (out_dir) ---------------------------------------------
def load_trained_weights(model: torch.nn.Module, out_dir: Path) -> torch.nn.Module:
    """Load `out_dir/model.safetensors` (written by `train`) into `model`. Tied weights, which
    `save_pretrained` stores once, are the only keys allowed to be missing."""
    path = Path(out_dir) / "model.safetensors"
    if not path.is_file():
        raise HarnessError(f"no trained weights at {path}; train the method first")
    state = load_file(str(path))
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise HarnessError(f"{path} does not fit this model: shapes differ for {wrong[:5]}")
    unexpected, missing = load_weights_allowing_ties(model, state)
    if unexpected:
        raise HarnessError(f"{path} does not fit this model: unexpected keys {unexpected[:5]}")
    if missing:
        raise HarnessError(f"{path} does not fit this model: missing keys {missing[:5]}")
    return model


def load_weights_allowing_ties(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load `state` into `model`; (unexpected keys, missing keys), where a key is not missing if the tensor
    it names is tied to one that was loaded (`save_pretrained` stores tied weights once)."""
    result = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in state if k in params}
    missing = [k for k in result.missing_keys if k not in params or params[k].data_ptr() not in loaded_ptrs]
    return list(result.unexpected_keys), missing


def read_accounting(out_dir: Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "accounting.json").read_text())
