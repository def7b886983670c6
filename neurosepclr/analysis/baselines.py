"""Baselines SepCLR is judged against (docs/method.md), on the same preprocessed voxels.

* :class:`ContrastivePCA` — Abid et al., Nat. Commun. 2018: top eigenvectors of
  C_target − α·C_background (after a joint PCA that keeps the problem small).
* PCA of the voxels, and voxel-wise z-scores against controls followed by PCA.

Each baseline yields a representation per subject; subtypes come from k-means fitted on the
training patients and applied to every patient (held-out ones included), as for SepCLR.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler


class ContrastivePCA(TransformerMixin, BaseEstimator):
    """Contrastive PCA: directions of high target variance and low background variance.

    ``fit(X, y)`` with ``y`` 1 for target rows and 0 for background rows; ``X`` is first reduced by a
    joint PCA to ``n_joint`` components.
    """

    def __init__(self, n_components: int = 10, alpha: float = 2.0, n_joint: int = 60, random_state: int = 0):
        self.n_components = n_components
        self.alpha = alpha
        self.n_joint = n_joint
        self.random_state = random_state

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(bool)
        n_joint = min(self.n_joint, X.shape[0] - 1, X.shape[1])
        self.pca_ = PCA(n_joint, random_state=self.random_state).fit(X)
        Z = self.pca_.transform(X)
        c_target = np.cov(Z[y], rowvar=False)
        c_background = np.cov(Z[~y], rowvar=False)
        values, vectors = np.linalg.eigh(c_target - self.alpha * c_background)
        order = np.argsort(values)[::-1][: self.n_components]
        self.components_ = vectors[:, order].T
        self.eigenvalues_ = values[order]
        return self

    def transform(self, X):
        return self.pca_.transform(np.asarray(X, dtype=np.float64)) @ self.components_.T


def flatten_volumes(volumes, mask: np.ndarray | None = None) -> np.ndarray:
    """(N, 1, D, H, W) tensor or array → (N, voxels inside the mask)."""
    data = np.asarray(volumes, dtype=np.float32).reshape(len(volumes), -1)
    if mask is None:
        mask = np.abs(data).sum(axis=0) > 0
    return data[:, mask.reshape(-1)]


def kmeans_subtypes(rep: np.ndarray, is_target: np.ndarray, train: np.ndarray, k: int, seed: int = 0):
    """k-means on standardised representations of the training patients; labels for every patient
    (``None`` for controls) and the training silhouette."""
    fit_rows = is_target & train
    scaler = StandardScaler().fit(rep[fit_rows])
    model = KMeans(k, n_init=20, random_state=seed).fit(scaler.transform(rep[fit_rows]))
    labels = np.full(len(rep), None, dtype=object)
    labels[is_target] = model.predict(scaler.transform(rep[is_target])).astype(str)
    silhouette = float(silhouette_score(scaler.transform(rep[fit_rows]), model.labels_))
    return labels, silhouette


def subtypes_frame(table: pd.DataFrame, split: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": table["participant_id"],
            "group": table["group"],
            "subtype": labels,
            "split": split,
        }
    )


def embeddings_frame(table: pd.DataFrame, split: np.ndarray, name: str, rep: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"participant_id": table["participant_id"], "split": split})
    return pd.concat([frame, pd.DataFrame(rep, columns=[f"{name}_{k}" for k in range(rep.shape[1])])], axis=1)


def roi_means(volumes, affine: np.ndarray, atlas) -> tuple[np.ndarray, list[str]]:
    """Mean intensity of every atlas region (ROI-based subtyping as in HYDRA): (N, regions)."""
    from scipy import ndimage

    data = np.asarray(volumes, dtype=np.float64)[:, 0]
    labels = atlas.resampled_to(affine, data.shape[1:]).labels
    index = np.unique(labels[labels > 0])
    features = np.stack([ndimage.mean(volume, labels, index) for volume in data])
    return features, [atlas.names.get(int(i), str(i)) for i in index]


def zscore_against_controls(features: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Features standardised with the (training) controls' mean and standard deviation."""
    return (features - features[controls].mean(0)) / (features[controls].std(0) + 1e-12)
