"""Balanced batches as a pure function of (seed, step): both groups in every batch, each group's
subjects visited in a fresh random order every pass, and nothing to save for an exact resume."""

from __future__ import annotations

import numpy as np


def _cycle_permutation(indices: np.ndarray, seed: int, salt: int, cycle: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt, cycle]))
    return indices[rng.permutation(len(indices))]


def _take(indices: np.ndarray, count: int, position: int, seed: int, salt: int) -> np.ndarray:
    """``count`` items starting at ``position`` of the endless sequence of per-cycle permutations."""
    out = []
    n = len(indices)
    while count > 0:
        cycle, offset = divmod(position, n)
        chunk = _cycle_permutation(indices, seed, salt, cycle)[offset : offset + count]
        out.append(chunk)
        count -= len(chunk)
        position += len(chunk)
    return np.concatenate(out)


def balanced_batch(
    is_target: np.ndarray, batch_size: int, target_fraction: float, step: int, seed: int
) -> np.ndarray:
    """Indices (into ``is_target``) of the batch of ``step``, with ``round(batch_size × target_fraction)``
    targets (at least one of each group when both exist)."""
    targets = np.flatnonzero(is_target)
    background = np.flatnonzero(~is_target)
    if len(targets) == 0 or len(background) == 0:
        pool = targets if len(targets) else background
        return _take(pool, min(batch_size, len(pool)), step * batch_size, seed, 0)
    n_target = round(batch_size * target_fraction)
    n_target = min(max(n_target, 1), batch_size - 1)
    n_background = batch_size - n_target
    n_target, n_background = min(n_target, len(targets)), min(n_background, len(background))
    return np.concatenate(
        [
            _take(targets, n_target, step * n_target, seed, 1),
            _take(background, n_background, step * n_background, seed, 2),
        ]
    )
