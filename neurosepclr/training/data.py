"""The deterministic part of the data path, done once: preprocessed volumes → pooled tensors.

``preprocess`` writes volumes already registered, masked, cropped and normalised; here they are
average-pooled to the training grid (``train.pool``), one volume at a time, and kept with the
cohort's metadata either in RAM or, for cohorts larger than RAM, in a memory-mapped ``.npy`` array
(``train.cache: memmap``) that the batches index like a tensor. A subject-level train/validation
split is stratified by group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from neurosepclr.data.cohort import TARGET
from neurosepclr.errors import InputDataError, MissingInputError
from neurosepclr.io import read_tsv


@dataclass
class CohortTensors:
    """Pooled volumes (N, C, D, H, W), one channel per feature (``data.features``), with their
    subjects, groups, metadata and grid affine."""

    volumes: torch.Tensor
    table: pd.DataFrame
    is_target: torch.Tensor
    affine: np.ndarray
    manifest: pd.DataFrame
    root: Path | None = None  # the preprocess folder the volumes were read from

    def __len__(self) -> int:
        return len(self.table)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pooled_affine(affine: np.ndarray, pool: int) -> np.ndarray:
    """Affine of the grid after average pooling by ``pool`` (voxel centres move by (pool−1)/2)."""
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * pool
    out[:3, 3] = affine[:3, :3] @ np.full(3, (pool - 1) / 2.0) + affine[:3, 3]
    return out


def read_cohort_table(derivatives: str | Path, include_failed_qc: bool = False) -> pd.DataFrame:
    """``cohort.tsv`` of a ``preprocess`` output folder, without the images failing QC (warned)."""
    root = Path(derivatives)
    cohort_path = root / "cohort.tsv"
    if not cohort_path.is_file():
        raise MissingInputError(f"{root}: no cohort.tsv (run neurosepclr preprocess first)")
    table = read_tsv(cohort_path)
    if not include_failed_qc and "qc_pass" in table:
        failed = table[~table["qc_pass"].astype(bool)]
        table = table[table["qc_pass"].astype(bool)].reset_index(drop=True)
        if len(failed):
            import logging

            logging.getLogger("neurosepclr").warning(
                "%d image(s) failing QC left out: %s", len(failed), ", ".join(failed["participant_id"])
            )
    if table.empty:
        raise InputDataError(f"{cohort_path}: no subject to train on")
    return table


# cohort.tsv column holding each feature's image (preprocess writes one column per feature)
FEATURE_COLUMNS = {"t1": "preproc", "gm": "gm", "gm_modulated": "gm_modulated", "logjacobian": "logjacobian"}


def feature_columns(table: pd.DataFrame, features: tuple[str, ...], root: Path) -> list[str]:
    """The cohort.tsv columns of ``features``; a feature preprocess did not write is an error."""
    columns = [FEATURE_COLUMNS[f] for f in features]
    missing = [f for f, c in zip(features, columns, strict=True) if c not in table]
    if missing:
        raise MissingInputError(
            f"{root / 'cohort.tsv'}: no {', '.join(missing)} images; preprocess with "
            f"--features {' '.join(features)} (data.features asks for them)"
        )
    return columns


def subject_hash(hashes: list[str], features: tuple[str, ...]) -> str:
    """One subject's input hash: its image's SHA-256 with one feature, else the hash of the features'
    (name, SHA-256) pairs."""
    if len(hashes) == 1:
        return hashes[0]
    return sha256_bytes(";".join(f"{f}:{h}" for f, h in zip(features, hashes, strict=True)).encode())


def derivatives_manifest(
    derivatives: str | Path, features: tuple[str, ...] = ("t1",), include_failed_qc: bool = False
) -> pd.DataFrame:
    """Subjects and SHA-256 of their input images (what :func:`inputs_digest` hashes)."""
    root = Path(derivatives)
    table = read_cohort_table(root, include_failed_qc)
    columns = feature_columns(table, features, root)
    hashes = []
    for row in table.to_dict(orient="records"):
        per_feature = [sha256_bytes(_image_bytes(root, row["participant_id"], row[c])) for c in columns]
        hashes.append(subject_hash(per_feature, features))
    return _manifest(table, columns, hashes)


def _manifest(table: pd.DataFrame, columns: list[str], hashes: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": table["participant_id"],
            "session_id": table["session_id"],
            "path": table[columns].astype(str).agg(";".join, axis=1),
            "sha256": hashes,
        }
    )


def load_derivatives(
    derivatives: str | Path,
    pool: int,
    features: tuple[str, ...] = ("t1",),
    include_failed_qc: bool = False,
    memmap: str | Path | None = None,
    table: pd.DataFrame | None = None,
) -> CohortTensors:
    """Read ``cohort.tsv`` (or take ``table``, read from it already) and every subject's feature
    images (one channel each) of a ``preprocess`` output folder.

    Each volume is pooled as soon as it is read. With ``memmap`` (a ``.npy`` path, created or
    replaced) the pooled volumes go to a memory-mapped array on disk instead of RAM; the values
    are the same.
    """
    root = Path(derivatives)
    if table is None:
        table = read_cohort_table(root, include_failed_qc)
    columns = feature_columns(table, tuple(features), root)
    stack: torch.Tensor | None = None
    hashes: list[str] = []
    grid: list = []  # the first image's (affine, shape): every image must share it
    for index, row in enumerate(table.to_dict(orient="records")):
        channels, per_feature = [], []
        for column in columns:
            data, raw = _read_volume(root, row["participant_id"], row[column], grid)
            channels.append(pool_volume(torch.from_numpy(data), pool))
            per_feature.append(sha256_bytes(raw))
        pooled = torch.cat(channels)
        hashes.append(subject_hash(per_feature, tuple(features)))
        if stack is None:  # filled in place: the cohort is held once, never as a list and a copy
            shape = (len(table), *pooled.shape)
            stack = torch.empty(shape) if memmap is None else _open_memmap(Path(memmap), shape)
        stack[index] = pooled
    if stack is None:
        raise InputDataError(f"{root}: no subject to load")
    manifest = _manifest(table, columns, hashes)
    is_target = torch.tensor((table["group"] == TARGET).to_numpy(dtype=bool))
    affine = pooled_affine(grid[0], pool)
    return CohortTensors(stack.contiguous(), table, is_target, affine, manifest, root)


def _image_bytes(root: Path, participant: str, relative: str) -> bytes:
    """The bytes of one preprocessed image named in cohort.tsv; a missing file is an input error."""
    path = root / relative
    if not path.is_file():
        raise MissingInputError(f"{participant}: {relative}: preprocessed image not found")
    return path.read_bytes()


def _read_volume(root: Path, participant: str, relative: str, grid: list) -> tuple[np.ndarray, bytes]:
    """One preprocessed image as float32 and its raw bytes; checks it is finite and on the grid of
    the first image read (``grid``, filled on the first call)."""
    raw = _image_bytes(root, participant, relative)
    img = nib.Nifti1Image.from_bytes(_gunzip(raw, root / relative))
    if not grid:
        grid.extend([img.affine, img.shape])
    elif img.shape != grid[1] or not np.allclose(img.affine, grid[0], atol=1e-4):
        raise InputDataError(f"{participant}: {relative}: grid differs from the other subjects")
    data = np.asarray(img.dataobj, dtype=np.float32)
    if not np.isfinite(data).all():
        raise InputDataError(f"{participant}: {relative}: NaN or Inf in a preprocessed image")
    return data, raw


def pool_volume(volume: torch.Tensor, pool: int) -> torch.Tensor:
    """One (D, H, W) volume average-pooled by ``pool`` (ceil mode) to (1, D', H', W')."""
    volume = volume[None]
    if pool > 1:
        volume = F.avg_pool3d(volume[None], kernel_size=pool, stride=pool, ceil_mode=True)[0]
    return volume


def _open_memmap(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 array on disk, mapped into memory; the file is unlinked as soon as it is mapped, so
    its disk space comes back when the process ends, after a crash or SIGKILL too (POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    path.unlink()
    return torch.from_numpy(array)


def _chunks(indices: np.ndarray, size: int = 64):
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def mean_volume(volumes: torch.Tensor, rows: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """The float64 mean (1, C, D, H, W) of ``volumes[rows]``, read ``chunk`` subjects at a time, so
    a memory-mapped cohort is never read into RAM at once."""
    total = torch.zeros((1, *volumes.shape[1:]), dtype=torch.float64)
    for rows_chunk in _chunks(rows, chunk):
        total += volumes[rows_chunk].double().sum(dim=0, keepdim=True)
    return total / max(len(rows), 1)


def _reference_statistics(
    volumes: torch.Tensor, row_groups: list[np.ndarray]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Voxel-wise mean (1, C, D, H, W) of each group of reference rows and their pooled within-group
    standard deviation, floored at a tenth of its median inside the brain (per channel), so voxels where the
    reference barely varies (edges, background) do not blow up the z-scores. Two passes over chunks
    of subjects, in float64, so a memory-mapped cohort is never read into RAM at once."""
    squares = torch.zeros((1, *volumes.shape[1:]), dtype=torch.float64)
    means = []
    for rows in row_groups:
        mean = mean_volume(volumes, rows)
        for chunk in _chunks(rows):
            squares += (volumes[chunk].double() - mean).pow(2).sum(dim=0, keepdim=True)
        means.append(mean)
    spread = (squares / (sum(len(rows) for rows in row_groups) - len(row_groups))).sqrt()
    for channel in range(spread.shape[1]):  # each feature in its own units
        values = spread[:, channel]
        inside = values > 0
        floor = 0.1 * float(values[inside].median()) if inside.any() else 1.0
        spread[:, channel] = values.clamp_min(floor)
    return means, spread


def control_reference(volumes: torch.Tensor, is_reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel-wise mean and floored spread (1, 1, D, H, W) of the reference subjects (training
    controls); see :func:`_reference_statistics`."""
    rows = np.flatnonzero(np.asarray(is_reference))
    if len(rows) < 2:
        raise InputDataError("train.input_norm=controls needs at least 2 training controls")
    means, spread = _reference_statistics(volumes, [rows])
    return means[0].float(), spread.float()


def site_control_reference(
    volumes: torch.Tensor, is_reference: torch.Tensor, sites: pd.Series
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Per-site voxel-wise means (S, 1, D, H, W) of the reference subjects (training controls), the
    pooled within-site spread (1, 1, D, H, W), floored as in :func:`control_reference`, and the site
    names in the order of the means. Every site of the cohort needs at least 2 reference subjects.

    z = (x − mean of the subject's site) / pooled spread removes each scanner's additive effect
    per voxel, estimated on controls only (a location-scale harmonisation without patients).
    """
    sites = sites.astype(str).reset_index(drop=True)
    reference = np.asarray(is_reference)
    names = sorted(sites.unique())
    row_groups = []
    for name in names:
        rows = np.flatnonzero(reference & (sites == name).to_numpy())
        if len(rows) < 2:
            raise InputDataError(
                f"train.input_norm=site_controls: site {name!r} has {len(rows)} training controls (needs 2)"
            )
        row_groups.append(rows)
    means, spread = _reference_statistics(volumes, row_groups)
    return torch.cat(means).float(), spread.float(), names


def site_indices(table: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Index into ``names`` of every row's site; a site unseen in training is an input error."""
    if "site" not in table:
        raise InputDataError("train.input_norm=site_controls needs a site column in participants.tsv")
    lookup = {name: k for k, name in enumerate(names)}
    unknown = ~table["site"].astype(str).isin(lookup)
    if unknown.any():
        row = table[unknown].iloc[0]
        raise InputDataError(
            f"{row['participant_id']}: site {row['site']!r} has no training controls in this run "
            f"(sites: {', '.join(names)}); it cannot be normalised as in training"
        )
    return table["site"].astype(str).map(lookup).to_numpy()


def normalise_to_reference(volumes: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """z-scores of ``volumes`` against a control reference: what differs from controls, in their units."""
    return ((volumes - mean) / spread).contiguous()


def normalise_in_place(
    volumes: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor, site_index: np.ndarray | None = None
) -> torch.Tensor:
    """:func:`normalise_to_reference` written back into ``volumes`` chunk by chunk (memory-mapped
    cohorts: no second copy in RAM); returns ``volumes``. With ``site_index``, ``mean`` holds one
    mean per site and each subject is referred to its own site's."""
    for start in range(0, len(volumes), 64):
        rows = slice(start, start + 64)
        row_mean = mean if site_index is None else mean[torch.tensor(site_index[rows])]
        volumes[rows] = normalise_to_reference(volumes[rows], row_mean, spread)
    return volumes


def _gunzip(raw: bytes, path: Path) -> bytes:
    import gzip

    return gzip.decompress(raw) if path.name.endswith(".gz") else raw


def stratified_split(
    groups: pd.Series, val_fraction: float, seed: int, participants: pd.Series | None = None
) -> np.ndarray:
    """'train' / 'val' per image, drawn per participant (all sessions of one participant fall on the
    same side) and stratified by group; at least one participant of each group stays in train."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    groups = groups.reset_index(drop=True)
    keys = (participants if participants is not None else pd.Series(range(len(groups)))).reset_index(
        drop=True
    )
    first = pd.DataFrame({"key": keys, "group": groups}).drop_duplicates("key")  # a participant's first image
    held_out: set = set()
    for value in sorted(first["group"].unique()):
        members = first.loc[first["group"] == value, "key"].to_numpy()
        n_val = min(round(val_fraction * len(members)), len(members) - 1)
        held_out.update(members[rng.permutation(len(members))[:n_val]].tolist())
    return np.where(keys.isin(held_out).to_numpy(), "val", "train").astype(str)


def inputs_digest(manifest: pd.DataFrame) -> str:
    """One hash of the training inputs (subjects and file contents), for resume checks."""
    text = "\n".join(
        f"{p}\t{s}\t{h}"
        for p, s, h in zip(
            manifest["participant_id"], manifest["session_id"], manifest["sha256"], strict=True
        )
    )
    return sha256_bytes(text.encode())
