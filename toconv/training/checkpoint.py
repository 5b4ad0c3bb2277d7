"""Atomic checkpoints: compressor safetensors for users, plus the full state for exact resume.

Run folder layout::

    latest.safetensors, best.safetensors, checkpoint_epoch_N.safetensors   compressor only
    state/latest.json                                                      points at one step folder
    state/step_XXXXXXXX/{compressor,critic,decoder}.safetensors, trainer.pt

Every file is written under a temporary name and renamed; a step folder is complete before
``latest.json`` is switched to it, and older step folders are deleted only afterwards. A kill at
any moment therefore leaves a loadable ``latest.safetensors`` and a consistent training state.
``trainer.pt`` holds only tensors and plain Python values, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from toconv.models import TokenCompressor

STATE_DIR = "state"
POINTER = "latest.json"


def _tmp_sibling(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that keeps its suffix (safetensors checks it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def save_compressor(compressor: TokenCompressor, path: Path, metadata: dict[str, str]) -> Path:
    """Atomically write the compressor (config in the safetensors metadata) to ``path``."""
    tmp = _tmp_sibling(path)
    try:
        compressor.save_pretrained(tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = _tmp_sibling(path)
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a training step reads, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "objective": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["objective"])


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_training_state(run_dir: Path, modules: dict[str, nn.Module], trainer: dict[str, Any],
                        compressor_metadata: dict[str, str]) -> Path:
    """Write a complete step folder, switch ``state/latest.json`` to it, drop older ones.

    Args:
        modules: ``compressor``, ``critic``, ``decoder`` (unwrapped modules).
        trainer: optimizer states, counters, RNG states (tensors and plain values only).
    """
    root = run_dir / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{trainer['step']:08d}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for key, module in modules.items():
        meta = compressor_metadata if key == "compressor" else {}
        save_file(_weights(module), str(tmp / f"{key}.safetensors"), metadata=meta)
    torch.save(trainer, tmp / "trainer.pt")
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_json(root / POINTER, {"folder": name, "step": trainer["step"], "epoch": trainer["epoch"]})
    for old in root.glob("step_*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def has_training_state(run_dir: Path) -> bool:
    return (run_dir / STATE_DIR / POINTER).is_file()


def finished_summary(run_dir: Path, epochs: int, max_steps: int | None) -> dict[str, Any] | None:
    """The run's ``summary.json`` if the run is finished for this target, else ``None``.

    Finished: a summary was written and the saved state reached ``epochs`` (or ``max_steps``).
    """
    summary = run_dir / "summary.json"
    if not (summary.is_file() and has_training_state(run_dir)):
        return None
    pointer = json.loads((run_dir / STATE_DIR / POINTER).read_text())
    done = pointer["epoch"] >= epochs or (max_steps is not None and pointer["step"] >= max_steps)
    return json.loads(summary.read_text()) if done else None


def load_training_state(run_dir: Path, modules: dict[str, nn.Module]) -> dict[str, Any]:
    """Load the weights of ``state/latest.json``'s folder into ``modules``; return ``trainer.pt``.

    Weights load strictly from safetensors; ``trainer.pt`` loads with ``weights_only=True``.
    """
    root = run_dir / STATE_DIR
    folder = root / json.loads((root / POINTER).read_text())["folder"]
    for key, module in modules.items():
        device = next(module.parameters()).device
        module.load_state_dict(load_file(str(folder / f"{key}.safetensors"), device=str(device)))
    return torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
