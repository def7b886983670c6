"""Where and in what precision the networks run, and their representations of a cohort.

Shared by training (probes during validation) and analysis (``subtype``), so neither imports the
other for it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from neurosepclr.errors import ConfigError
from neurosepclr.hardware import native_cpu_bf16


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a device is a configuration error."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on a CPU with native bf16 instructions, else fp32 (the measured trade-off is in
    benchmarks/README.md, "Training throughput")."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and native_cpu_bf16() else "fp32"


def autocast_factory(precision: str, device: torch.device):
    """A zero-argument context-manager factory for the chosen precision."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device; use bf16 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def representations(
    model, volumes: torch.Tensor, device, batch_size: int = 32, channels_last: bool = False, autocast=None
) -> tuple[np.ndarray, np.ndarray]:
    """(common, salient) representations of every volume, model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    commons, salients = [], []
    for start in range(0, len(volumes), batch_size):
        x = volumes[start : start + batch_size].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            c, s = model.forward_features(x)
        commons.append(c.float().cpu())
        salients.append(s.float().cpu())
    model.train(was_training)
    return torch.cat(commons).numpy(), torch.cat(salients).numpy()
