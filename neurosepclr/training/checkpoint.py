"""Checkpoints: state dicts only, written atomically, read back with ``weights_only=True``.

A checkpoint holds the model, optimiser, scheduler and gradient-scaler states, the step, the best
metric so far, the torch RNG state, and the SHA-256 of the resolved config and of the inputs, so a
resume can refuse a changed run. Nothing in it is a pickled object: a crafted file cannot execute
code when loaded.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from neurosepclr.errors import InputDataError, MissingInputError
from neurosepclr.io import atomic_write_bytes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``; anything else than tensors and plain containers is refused."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputDataError(f"{path}: not a safe neurosepclr checkpoint, refused ({reason})") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise InputDataError(f"{path}: not a neurosepclr checkpoint (no model state or step)")
    return state
