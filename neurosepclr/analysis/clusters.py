"""Cluster and peak tables of a statistic map in template space, named with atlases.

A cluster is a face-, edge- or corner-connected set of voxels (26-connectivity, as SPM and FSL's
``cluster``) whose statistic passes the threshold on one side (``sign``). Each row gives the
cluster's volume in mm³, its peak (most extreme voxel) in MNI millimetres, the atlas region at the
peak and the regions the cluster covers, in full names (:func:`~neurosepclr.atlases.full_region_name`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from neurosepclr.atlases import Atlas, full_region_name


def resample_map(
    values: np.ndarray,
    affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, ...],
    order: int = 1,
) -> np.ndarray:
    """A map sampled at the voxels of another grid (``order`` 1: trilinear, 0: nearest; 0 outside the
    map's field of view)."""
    to_map = np.linalg.inv(affine) @ target_affine
    coords = np.indices(target_shape, dtype=np.float64).reshape(3, -1)
    mapped = to_map[:3, :3] @ coords + to_map[:3, 3:4]
    sampled = ndimage.map_coordinates(
        np.asarray(values, dtype=np.float64), mapped, order=order, mode="constant"
    )
    return sampled.reshape(target_shape)


def voxels_to_mm(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(n, 3) voxel indices → (n, 3) millimetre coordinates."""
    return indices @ affine[:3, :3].T + affine[:3, 3]


def atlas_labels_at(atlas: Atlas, xyz_mm: np.ndarray) -> np.ndarray:
    """The atlas label at each (n, 3) millimetre coordinate (nearest voxel; 0 outside the atlas)."""
    ijk = np.rint((xyz_mm - atlas.affine[:3, 3]) @ np.linalg.inv(atlas.affine[:3, :3]).T).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(atlas.labels.shape)), axis=1)
    labels = np.zeros(len(ijk), dtype=np.int64)
    labels[inside] = atlas.labels[tuple(ijk[inside].T)]
    return labels


def _region(atlas: Atlas, label: int) -> str:
    return (
        full_region_name(atlas.name, atlas.names[label])
        if label in atlas.names and label > 0
        else "unlabelled"
    )


def peak_hemisphere(x_mm: float, half_voxel: float = 1.0) -> str:
    """Side of a point: 'left' (x < 0 in RAS+), 'right', or 'midline' within half a voxel of x = 0."""
    return "midline" if abs(x_mm) <= half_voxel else ("left" if x_mm < 0 else "right")


def cluster_table(
    stat: np.ndarray,
    affine: np.ndarray,
    threshold: float,
    atlases: list[Atlas],
    sign: int = 1,
    min_volume_mm3: float = 0.0,
    stat_name: str = "stat",
    also: dict[str, np.ndarray] | None = None,
    top_regions: int = 3,
) -> pd.DataFrame:
    """Clusters of ``sign · stat ≥ threshold``, largest first: cluster, sign, volume_mm3, peak value
    (``peak_<stat_name>``, and ``peak_<name>`` of each map in ``also`` at the same voxel), peak x/y/z
    (MNI mm), peak hemisphere, and per atlas the region at the peak and the ``top_regions`` regions
    covering most of the cluster (with their share of its volume)."""
    mask = sign * np.asarray(stat) >= threshold
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_mm3 = round(abs(float(np.linalg.det(affine[:3, :3]))), 6)
    rows = []
    for index in range(1, count + 1):
        voxels = np.argwhere(labelled == index)
        volume = len(voxels) * voxel_mm3
        if volume < min_volume_mm3:
            continue
        values = sign * stat[tuple(voxels.T)]
        peak_voxel = voxels[int(np.argmax(values))]
        peak_mm = voxels_to_mm(affine, peak_voxel[None])[0]
        row = {
            "sign": "+" if sign > 0 else "-",
            "volume_mm3": volume,
            f"peak_{stat_name}": float(stat[tuple(peak_voxel)]),
        }
        for name, other in (also or {}).items():
            row[f"peak_{name}"] = float(other[tuple(peak_voxel)])
        row |= {"peak_x_mm": peak_mm[0], "peak_y_mm": peak_mm[1], "peak_z_mm": peak_mm[2]}
        row["peak_hemisphere"] = peak_hemisphere(peak_mm[0], abs(affine[0, 0]) / 2)
        cluster_mm = voxels_to_mm(affine, voxels)
        for atlas in atlases:
            row[f"{atlas.name}_peak_region"] = _region(atlas, int(atlas_labels_at(atlas, peak_mm[None])[0]))
            labels, counts = np.unique(atlas_labels_at(atlas, cluster_mm), return_counts=True)
            order = np.argsort(-counts, kind="stable")
            named = [(int(labels[i]), counts[i]) for i in order if labels[i] > 0][:top_regions]
            row[f"{atlas.name}_regions"] = "; ".join(
                f"{_region(atlas, label)} {100 * n / len(voxels):.0f}%" for label, n in named
            )
        rows.append(row)
    columns = [
        "cluster",
        "sign",
        "volume_mm3",
        f"peak_{stat_name}",
        *(f"peak_{n}" for n in also or {}),
        "peak_x_mm",
        "peak_y_mm",
        "peak_z_mm",
        "peak_hemisphere",
    ]
    columns += [c for atlas in atlases for c in (f"{atlas.name}_peak_region", f"{atlas.name}_regions")]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["_peak"] = frame[f"peak_{stat_name}"].abs()
    frame = frame.sort_values(["volume_mm3", "_peak"], ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "cluster", np.arange(1, len(frame) + 1))
    return frame[columns]


def keep_clusters(
    values: np.ndarray, passes: np.ndarray, affine: np.ndarray, min_volume_mm3: float
) -> np.ndarray:
    """``values`` where ``passes`` holds in a 26-connected cluster of at least ``min_volume_mm3``, else
    0: the map a report draws, matching its cluster table."""
    labelled, count = ndimage.label(passes, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros_like(values)
    sizes = np.bincount(labelled.ravel())[1:] * abs(np.linalg.det(affine[:3, :3]))
    kept = np.concatenate([[False], sizes >= min_volume_mm3])[labelled]
    return np.where(kept, values, 0.0)
