"""Model-independent maps: each subtype's patients against the controls, voxel by voxel, on the
preprocessed inputs (the 2 mm derivatives the encoders were trained on, before pooling).

One general linear model per voxel, fitted once for all subtypes: intercept, one indicator per
subtype (controls are the reference) and the covariates age, sex and site where the cohort table
has them (:func:`~neurosepclr.analysis.statistics.covariate_design`). The effect size of subtype S
is its coefficient over the residual standard deviation: Cohen's d adjusted for the covariates,
negative where the subtype's patients have less than matched controls (less grey matter, darker T1w).
The subjects are read one at a time (:class:`~neurosepclr.analysis.statistics.StreamingGLM`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neurosepclr.analysis.statistics import StreamingGLM, covariate_design
from neurosepclr.training.data import FEATURE_COLUMNS, _read_volume

log = logging.getLogger("neurosepclr")
CONTROL = "control"


@dataclass
class EffectSizeMaps:
    """Cohen's d (and t) per input feature and subtype, on the derivatives' grid."""

    affine: np.ndarray
    shape: tuple[int, ...]
    d: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # feature → subtype → map
    t: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    mask: np.ndarray | None = None  # the template brain mask beside the derivatives, if on their grid
    covariates: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    degrees_of_freedom: int = 0


def brain_mask(root: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The template brain mask ``preprocess`` wrote beside the derivatives, if it is on their grid."""
    for path in sorted(Path(root).glob("tpl-*_desc-brain_mask.nii.gz")):
        mask = np.asarray(nib.load(path).dataobj) > 0
        if mask.shape == tuple(shape):
            return mask
    return None


def effect_size_maps(
    root: Path,
    table: pd.DataFrame,
    rows: np.ndarray,
    labels: np.ndarray,
    features: tuple[str, ...],
    covariates: tuple[str, ...] = ("age", "sex", "site"),
) -> EffectSizeMaps:
    """Effect-size maps of every subtype in ``labels`` (``"control"`` for the reference rows) against
    the controls, for the subjects ``rows`` of ``table`` (cohort.tsv rows) read from ``root``."""
    table = table.iloc[rows].reset_index(drop=True)
    labels = np.asarray(labels, dtype=object)[rows].astype(str)
    design, names, used = covariate_design(table, labels, CONTROL, covariates)
    subtypes = [name.removeprefix("group=") for name in names if name.startswith("group=")]
    group_columns = [names.index(f"group={s}") for s in subtypes]
    grid: list = []
    result = None
    for feature in features:
        column = FEATURE_COLUMNS[feature]
        glm = None
        for row, record in enumerate(table.to_dict(orient="records")):
            values, _ = _read_volume(Path(root), record["participant_id"], record[column], grid)
            if glm is None:
                glm = StreamingGLM(design, values.size)
            glm.add(row, values)
        if result is None:
            shape = tuple(grid[1])
            result = EffectSizeMaps(
                np.asarray(grid[0]), shape, mask=brain_mask(Path(root), shape), covariates=used
            )
            result.degrees_of_freedom = int(design.shape[0] - design.shape[1])
            result.counts = {s: int((labels == s).sum()) for s in [CONTROL, *subtypes]}
        d, t = glm.effect_sizes(group_columns, result.mask)
        for index, subtype in enumerate(subtypes):
            d_map, t_map = d[index].reshape(shape), t[index].reshape(shape)
            result.d.setdefault(feature, {})[subtype] = d_map.astype(np.float32)
            result.t.setdefault(feature, {})[subtype] = t_map.astype(np.float32)
    left_out = [c for c in covariates if c in table and c not in used]
    if left_out:
        log.warning(
            "effect-size maps: covariate(s) %s left out (missing values, one level, or confounded with "
            "the subtypes)",
            ", ".join(left_out),
        )
    return result
