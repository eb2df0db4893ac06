"""Checkpoints that survive a crash at any moment.

A run directory holds numbered checkpoint folders and a ``latest`` file naming
the newest complete one::

    run/checkpoint-000500/model.safetensors   weights (tied weights stored once)
    run/checkpoint-000500/state.pt            optimizer, RNG states, step, config
    run/latest                                "checkpoint-000500"

A save writes a new folder under a temporary name, flushes it to disk, renames
it into place, and only then rewrites ``latest`` (itself via a temporary file
and an atomic rename). A kill -9 at any point leaves ``latest`` naming a
checkpoint that was complete before the save began.

Loading never unpickles arbitrary objects: ``state.pt`` is read with
``torch.load(weights_only=True)``, which admits tensors and plain data (dicts,
lists, numbers, strings) only, so a run folder from someone else cannot run
code on this machine. Anything else in it is refused with a ValueError.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

__all__ = ["latest_checkpoint", "load_checkpoint", "load_state", "save_checkpoint"]

LATEST = "latest"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_state(folder: Path, model: nn.Module, state: dict[str, Any]) -> None:
    save_model(model, str(folder / "model.safetensors"))
    torch.save(state, folder / "state.pt")
    for name in ("model.safetensors", "state.pt"):
        with open(folder / name, "rb") as f:
            os.fsync(f.fileno())


def save_checkpoint(
    run_dir: str | os.PathLike[str], model: nn.Module, state: dict[str, Any], *, keep: int = 2
) -> Path:
    """Write a checkpoint for ``state["step"]`` atomically; keep the newest ``keep``."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{int(state['step']):06d}"
    tmp = Path(tempfile.mkdtemp(dir=run, prefix=f".{name}."))
    try:
        _write_state(tmp, model, state)
        final = run / name
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fd, pointer_tmp = tempfile.mkstemp(dir=run, prefix=".latest.")
    with os.fdopen(fd, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer_tmp, run / LATEST)
    _fsync_dir(run)
    # Prune old checkpoints and debris of interrupted saves; never the one just written.
    done = sorted(p for p in run.glob("checkpoint-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for debris in run.glob(".checkpoint-*"):
        shutil.rmtree(debris, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint folder ``latest`` names, or None if the run has none yet."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    folder = Path(run_dir) / pointer.read_text().strip()
    if not (folder / "model.safetensors").is_file() or not (folder / "state.pt").is_file():
        raise ValueError(
            f"{pointer} names {folder.name}, which is incomplete; the run directory was "
            "modified by hand. Point 'latest' at a complete checkpoint folder."
        )
    return folder


def load_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The training state saved in a checkpoint folder (``state.pt``), on the CPU.

    The state stays on the CPU: RNG states must be CPU ByteTensors, and the
    optimizer moves its moments to its parameters' device as it loads them.
    """
    path = Path(folder) / "state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses any class outside tensors and plain data before
        # building it; a file that needs one was not written by save_checkpoint.
        # torch's message advises weights_only=False; show only the line naming the object.
        lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln]
        what = f" ({lines[0]})" if lines else ""
        raise ValueError(
            f"{path} holds objects other than tensors and plain data{what}; it was not "
            "written by gptcore's save_checkpoint and is refused, since unpickling it could "
            "run code. If the run is your own, train it again with this version of gptcore."
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a training state dict")
    return state


def load_checkpoint(
    run_dir: str | os.PathLike[str], model: nn.Module, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """Load the latest weights into ``model`` (on ``map_location``); return the saved
    training state, on the CPU (None if there is no checkpoint)."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        return None
    missing, unexpected = load_model(
        model, str(folder / "model.safetensors"), strict=False, device=str(map_location)
    )
    if missing or unexpected:
        raise ValueError(
            f"{folder} does not fit this model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); "
            "was it trained with another config?"
        )
    return load_state(folder)
