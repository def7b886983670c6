"""A trained run read back for analysis: model weights (``weights_only``), config, split, input reference.

Used by ``neurosepclr subtype``: the representations of a cohort are computed with exactly the data
path of training (same pooling, same control reference when ``train.input_norm`` is ``controls`` or
``site_controls``). The run's own derivatives are found where ``run.json`` says, or where the caller
says they moved; either way their images must hash to the run's ``manifest.tsv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neurosepclr.config import Config, load_config
from neurosepclr.errors import InputDataError, MissingInputError
from neurosepclr.io import read_tsv
from neurosepclr.models import build_model
from neurosepclr.runfolder import derivatives_candidates, read_run_json
from neurosepclr.training.checkpoint import load_checkpoint
from neurosepclr.training.data import CohortTensors, load_derivatives, normalise_in_place, site_indices


@dataclass
class TrainedRun:
    run_dir: Path
    config: Config
    model: torch.nn.Module
    split: pd.DataFrame
    manifest: pd.DataFrame
    run_json: dict
    checkpoint: Path
    step: int
    input_mean: torch.Tensor | None
    input_spread: torch.Tensor | None
    input_sites: list[str] | None
    grid_shape: tuple[int, ...]
    grid_affine: np.ndarray
    moved_derivatives: Path | None = None

    def cohort(self, derivatives: str | Path | None = None) -> CohortTensors:
        """A cohort's volumes on the training grid, normalised as in training; by default the run's
        own cohort (checked against its manifest)."""
        features = tuple(self.config.data.features)
        # as in training: with train.cache memmap the volumes stay in a mapped file, not in RAM
        train = self.config.train
        local = Path(train.cache_dir) if train.cache_dir else None  # training's node-local folder, if here
        cache_folder = local if local is not None and local.is_dir() else self.run_dir
        memmap = cache_folder / ".volumes-analysis.npy" if train.cache == "memmap" else None
        if derivatives is not None:
            folder = derivatives
            data = load_derivatives(folder, self.config.train.pool, features, memmap=memmap)
        else:  # the first recorded place whose images are the ones the run was trained on
            candidates = derivatives_candidates(self.run_dir, self.run_json, self.moved_derivatives)
            for number, folder in enumerate(candidates, start=1):
                data = load_derivatives(folder, self.config.train.pool, features, memmap=memmap)
                try:
                    self._check_manifest(folder, data.manifest)
                    break
                except InputDataError:
                    if number == len(candidates):
                        raise
        shape = tuple(data.volumes.shape[2:])
        if shape != self.grid_shape or not np.allclose(data.affine, self.grid_affine, atol=1e-3):
            raise InputDataError(
                f"{folder}: its grid {shape} differs from the training grid {self.grid_shape} of "
                f"{self.run_dir} (preprocess it with the run's preprocess settings)"
            )
        if self.input_mean is not None:
            sites = site_indices(data.table, self.input_sites) if self.input_sites else None
            data.volumes = normalise_in_place(data.volumes, self.input_mean, self.input_spread, sites)
        return data

    def _check_manifest(self, folder: Path, manifest: pd.DataFrame) -> None:
        keys = ["participant_id", "session_id", "sha256"]
        now = manifest[keys].fillna("").astype(str).sort_values(keys).reset_index(drop=True)
        then = self.manifest[keys].fillna("").astype(str).sort_values(keys).reset_index(drop=True)
        if not now.equals(then):
            changed = len(set(map(tuple, now.to_numpy())) ^ set(map(tuple, then.to_numpy())))
            raise InputDataError(
                f"{folder}: these derivatives are not the ones {self.run_dir} was trained on "
                f"({changed} image record(s) differ from its manifest.tsv)"
            )


def load_run(
    run_dir: str | Path, checkpoint: str = "best", derivatives: str | Path | None = None
) -> TrainedRun:
    """Read a ``neurosepclr train`` run folder; ``checkpoint``: ``best`` (else ``last``) or ``last``;
    ``derivatives``: where the run's derivatives are now, when they moved."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "run.json", "split.tsv", "manifest.tsv"):
        if not (run_dir / name).is_file():
            raise MissingInputError(f"{run_dir}: no {name} (not a neurosepclr train run folder)")
    config = load_config(run_dir / "config.yaml")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.is_file():
        path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        raise MissingInputError(f"{run_dir}: no checkpoint {path.name} in checkpoints/")
    state = load_checkpoint(path)
    model = build_model(config.model, in_channels=len(config.data.features))
    model.load_state_dict(state["model"])
    model.eval()
    run = read_run_json(run_dir)
    return TrainedRun(
        run_dir=run_dir,
        config=config,
        model=model,
        split=read_tsv(run_dir / "split.tsv"),
        manifest=read_tsv(run_dir / "manifest.tsv"),
        run_json=run,
        checkpoint=path,
        step=int(state["step"]),
        input_mean=state.get("input_mean"),
        input_spread=state.get("input_spread"),
        input_sites=state.get("input_sites"),
        grid_shape=tuple(run["grid_shape"]),
        grid_affine=np.asarray(run["grid_affine"], dtype=float),
        moved_derivatives=Path(derivatives) if derivatives is not None else None,
    )


def training_membership(run: TrainedRun, table: pd.DataFrame, hashes: pd.Series) -> np.ndarray:
    """True for each subject whose participant ID or image content was in the run's training split."""
    train = run.split[run.split["split"] == "train"]
    by_id = table["participant_id"].isin(set(train["participant_id"]))
    keys = ["participant_id", "session_id"]
    manifest = run.manifest.assign(session_id=run.manifest["session_id"].fillna(""))
    train_keys = train[keys].assign(session_id=train["session_id"].fillna(""))
    train_hashes = set(manifest.merge(train_keys, on=keys)["sha256"])
    by_content = hashes.isin(train_hashes)
    return (by_id | by_content).to_numpy()
