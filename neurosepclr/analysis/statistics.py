"""Small statistics for the report: voxel-wise group comparisons, intervals and chance levels.

* :func:`welch_z`: one-sided Welch test of a per-voxel mean against the controls', as a z-score
  (the ``desc-saliencyz`` maps are these statistics, uncorrected for the number of voxels).
* :class:`StreamingGLM`: an ordinary least-squares fit of every voxel on one design (group
  indicators plus covariates), accumulated one subject at a time (X'X, X'Y, Y'Y), so cohorts of any
  size are compared in the memory of a few volumes. Effect sizes are Cohen's d adjusted for the
  covariates: the group coefficient over the residual standard deviation, as a VBM group
  comparison reports them.
* :func:`bootstrap_interval`, :func:`chance_level`: percentile intervals of a held-out score over
  resampled subjects, and what the score is for a probe that knows nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

P_001_ONE_SIDED = float(stats.norm.isf(0.001))  # 3.09: z threshold of p < 0.001, uncorrected


def welch_z(
    mean_a: np.ndarray, var_a: np.ndarray, n_a: int, mean_b: np.ndarray, var_b: np.ndarray, n_b: int
) -> np.ndarray:
    """z-score of Welch's t for ``mean_a > mean_b`` (one-sided; Welch–Satterthwaite degrees of
    freedom), voxel by voxel. Variances are unbiased sample variances; voxels where both are 0 get 0."""
    se2_a, se2_b = np.asarray(var_a) / n_a, np.asarray(var_b) / n_b
    se2 = se2_a + se2_b
    positive = se2 > 0
    t = np.zeros_like(se2, dtype=np.float64)
    t[positive] = (np.asarray(mean_a) - np.asarray(mean_b))[positive] / np.sqrt(se2[positive])
    with np.errstate(divide="ignore", invalid="ignore"):
        dof = se2**2 / (se2_a**2 / max(n_a - 1, 1) + se2_b**2 / max(n_b - 1, 1))
    dof = np.where(positive & np.isfinite(dof), dof, 1.0)
    log_p = stats.t.logsf(t, dof)  # log survival: stays finite for very large t
    z = -special.ndtri_exp(log_p)
    return np.where(positive, z, 0.0)


def covariate_design(
    table: pd.DataFrame,
    groups: np.ndarray,
    reference: str,
    covariates: tuple[str, ...] = ("age", "sex", "site"),
) -> tuple[np.ndarray, list[str], list[str]]:
    """Design matrix of a group comparison: intercept, one indicator per group other than
    ``reference`` (columns ``group=<label>``), then the covariates found in ``table`` (numeric ones
    centred; categorical ones as indicators, first level dropped). A covariate with missing values,
    one level only, or that makes the design rank-deficient (confounded with the groups) is left out.
    Returns (design, column names, covariates used)."""
    labels = sorted(set(groups) - {reference})
    columns = [np.ones(len(groups))] + [(groups == label).astype(float) for label in labels]
    names = ["intercept"] + [f"group={label}" for label in labels]
    used = []
    for covariate in covariates:
        if covariate not in table or table[covariate].isna().any():
            continue
        values = table[covariate]
        numeric = pd.to_numeric(values, errors="coerce")
        if not numeric.isna().any():
            block = [(numeric - numeric.mean()).to_numpy(dtype=float)]
            block_names = [covariate]
        else:
            levels = sorted(values.astype(str).unique())
            block = [(values.astype(str) == level).to_numpy(dtype=float) for level in levels[1:]]
            block_names = [f"{covariate}={level}" for level in levels[1:]]
        if not block or all(np.ptp(b) == 0 for b in block):
            continue
        trial = np.column_stack(columns + block)
        if np.linalg.matrix_rank(trial) < trial.shape[1] or trial.shape[1] >= len(groups):
            continue
        columns += block
        names += block_names
        used.append(covariate)
    return np.column_stack(columns), names, used


class StreamingGLM:
    """Voxel-wise OLS ``Y = X β + ε`` accumulated one subject (row of X, volume) at a time."""

    def __init__(self, design: np.ndarray, n_voxels: int):
        self.design = np.asarray(design, dtype=np.float64)
        self.xty = np.zeros((self.design.shape[1], n_voxels))
        self.yty = np.zeros(n_voxels)
        self.seen = np.zeros(len(self.design), dtype=bool)

    def add(self, row: int, values: np.ndarray) -> None:
        """Add subject ``row``'s voxel values (flattened, in the voxel order of every other subject)."""
        y = np.asarray(values, dtype=np.float64).ravel()
        self.xty += np.outer(self.design[row], y)
        self.yty += y * y
        self.seen[row] = True

    def effect_sizes(
        self, columns: list[int], mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Cohen's d, t) of each design column in ``columns``: β / σ and β / (σ √(X'X)⁻¹ᵢᵢ), with σ²
        the residual variance (N − p degrees of freedom). σ is floored at a tenth of its median over
        ``mask`` (the brain; every voxel without one): where subjects hardly vary (background, an
        image's flat interior) a tiny difference would otherwise become a huge d. Voxels outside
        ``mask`` get 0."""
        if not self.seen.all():
            raise ValueError(f"{int((~self.seen).sum())} subject(s) of the design were never added")
        n, p = self.design.shape
        if n <= p:
            raise ValueError(f"{n} subjects for {p} design columns: no residual degrees of freedom")
        xtx_inv = np.linalg.inv(self.design.T @ self.design)
        beta = xtx_inv @ self.xty
        residual = np.maximum(self.yty - np.einsum("pv,pv->v", beta, self.xty), 0.0)
        sigma = np.sqrt(residual / (n - p))
        inside = np.ones(len(sigma), dtype=bool) if mask is None else np.asarray(mask, dtype=bool).ravel()
        varying = inside & (sigma > 0)
        floor = 0.1 * np.median(sigma[varying]) if varying.any() else 1.0
        sigma = np.maximum(sigma, floor)
        d = np.zeros((len(columns), len(sigma)))
        t = np.zeros_like(d)
        for out, column in enumerate(columns):
            d[out, inside] = beta[column, inside] / sigma[inside]
            t[out, inside] = d[out, inside] / np.sqrt(xtx_inv[column, column])
        return d, t


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (sklearn's balanced accuracy, in numpy:
    fast enough to be recomputed for every bootstrap resample)."""
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination; NaN when ``y_true`` is constant."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    total = np.sum((y_true - y_true.mean()) ** 2)
    return float(1 - np.sum((y_true - y_pred) ** 2) / total) if total > 0 else float("nan")


FAST_SCORES = {"balanced_accuracy": balanced_accuracy, "mae": mean_absolute_error, "r2": r2}


def bootstrap_interval(
    y_true: np.ndarray, y_pred: np.ndarray, score, n_boot: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``score(y_true, y_pred)`` over subjects resampled with replacement
    (resamples where the score is undefined, e.g. one class only, are skipped)."""
    import warnings

    rng = np.random.default_rng(seed)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_boot):
            rows = rng.integers(0, len(y_true), len(y_true))
            if y_true.dtype.kind in "OUS" and len(set(y_true[rows])) < 2:
                continue
            value = score(y_true[rows], y_pred[rows])
            if np.isfinite(value):
                values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def chance_level(metric: str, y_true: np.ndarray, y_train: np.ndarray | None = None) -> float:
    """The score of a probe that knows nothing: balanced accuracy 1 / number of classes, R² 0, and
    the mean absolute error of predicting the training mean (the test mean without a split)."""
    if metric == "balanced_accuracy":
        return 1.0 / max(len(set(np.asarray(y_true).tolist())), 1)
    if metric == "r2":
        return 0.0
    if metric == "mae":
        centre = np.mean(y_train) if y_train is not None and len(y_train) else np.mean(y_true)
        return float(np.mean(np.abs(np.asarray(y_true, dtype=float) - centre)))
    raise ValueError(f"no chance level for metric {metric!r}")
