"""Subtypes of patients in the salient space: a scikit-learn estimator and stability-based choice of K.

:class:`SalientSubtyper` standardises the coordinates with the fitted patients' mean and spread,
then clusters them with k-means or a Gaussian mixture. ``predict`` assigns new subjects to the
fitted subtypes without refitting. :func:`stability_table` scores each K by how reproducible the
clustering is over split-half resamples (mean adjusted Rand index between the two halves' models
applied to all patients, as HYDRA and Smile-GAN report it) together with the silhouette.

The fitted model is stored as plain JSON (:func:`subtyper_to_dict`), never pickled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

METHODS = ("kmeans", "gmm")


def soft_assignments(sq_distances: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of probabilities ∝ exp(−d²/(2T)): a soft k-means assignment (T: within-cluster variance)."""
    logits = -sq_distances / (2.0 * max(temperature, 1e-12))
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


class SalientSubtyper(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """Cluster patients' salient coordinates into ``n_subtypes`` groups.

    Parameters
    ----------
    n_subtypes : number of subtypes K.
    method : ``"kmeans"`` or ``"gmm"`` (Gaussian mixture, diagonal covariances).
    standardise : z-score each coordinate with the fitted subjects' mean and standard deviation.
    n_init : restarts of the clustering algorithm.
    confidence : minimum membership probability for a confident assignment.
    random_state : seed.

    Attributes
    ----------
    labels_, cluster_centers_ (in the input coordinates), mean_, scale_, n_features_in_,
    temperature_ (within-cluster variance, k-means soft assignments), inertia_.
    """

    def __init__(
        self,
        n_subtypes: int = 3,
        method: str = "kmeans",
        standardise: bool = True,
        n_init: int = 10,
        confidence: float = 0.7,
        random_state=None,
    ):
        self.n_subtypes = n_subtypes
        self.method = method
        self.standardise = standardise
        self.n_init = n_init
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (isinstance(self.n_subtypes, int | np.integer) and 1 <= self.n_subtypes <= len(X)):
            raise ValueError(f"n_subtypes must be an integer in [1, {len(X)}], got {self.n_subtypes!r}")
        self.mean_ = X.mean(axis=0) if self.standardise else np.zeros(X.shape[1])
        scale = X.std(axis=0) if self.standardise else np.ones(X.shape[1])
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        Z = (X - self.mean_) / self.scale_
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        if self.method == "kmeans":
            model = KMeans(self.n_subtypes, n_init=self.n_init, random_state=seed).fit(Z)
            centres = model.cluster_centers_
            self.inertia_ = float(model.inertia_)
            self.temperature_ = max(self.inertia_ / max(Z.size, 1), 1e-6)
            self.weights_ = np.bincount(model.labels_, minlength=self.n_subtypes) / len(Z)
            self.variances_ = np.full((self.n_subtypes, Z.shape[1]), self.temperature_)
        else:
            model = GaussianMixture(
                self.n_subtypes, covariance_type="diag", n_init=self.n_init, random_state=seed, reg_covar=1e-4
            ).fit(Z)
            centres = model.means_
            self.weights_ = model.weights_
            self.variances_ = model.covariances_
            self.temperature_ = float(model.covariances_.mean())
            self.inertia_ = float(((Z - centres[model.predict(Z)]) ** 2).sum())
        self._centres_std = centres
        self.cluster_centers_ = centres * self.scale_ + self.mean_
        self._n_features_out = self.n_subtypes
        self.labels_ = self.predict(X)
        return self

    def _standardised(self, X) -> np.ndarray:
        check_is_fitted(self, "cluster_centers_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.mean_) / self.scale_

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each subject to each subtype centre (standardised coordinates)."""
        Z = self._standardised(X)
        return np.sqrt(((Z[:, None, :] - self._centres_std[None]) ** 2).sum(axis=2))

    def predict_proba(self, X) -> np.ndarray:
        """Membership probabilities: GMM posteriors, or soft k-means assignments."""
        Z = self._standardised(X)
        if self.method == "kmeans":
            return soft_assignments(
                ((Z[:, None, :] - self._centres_std[None]) ** 2).sum(axis=2), self.temperature_
            )
        log_p = (
            -0.5
            * (
                ((Z[:, None, :] - self._centres_std[None]) ** 2 / self.variances_[None]).sum(axis=2)
                + np.log(2 * np.pi * self.variances_).sum(axis=1)[None]
            )
            + np.log(self.weights_)[None]
        )
        log_p -= log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Subtype index of each subject: the nearest centre (k-means) or the most probable (GMM)."""
        if self.method == "kmeans":
            return self.transform(X).argmin(axis=1)
        return self.predict_proba(X).argmax(axis=1)

    def fit_predict(self, X, y=None, **kwargs):
        return self.fit(X).labels_


def subtyper_to_dict(model: SalientSubtyper) -> dict:
    """Plain-JSON description of a fitted subtyper (no pickle)."""
    check_is_fitted(model, "cluster_centers_")
    return {
        "params": model.get_params(),
        "mean": model.mean_.tolist(),
        "scale": model.scale_.tolist(),
        "centres_standardised": model._centres_std.tolist(),
        "weights": np.asarray(model.weights_).tolist(),
        "variances": np.asarray(model.variances_).tolist(),
        "temperature": model.temperature_,
        "inertia": model.inertia_,
    }


def subtyper_from_dict(data: dict) -> SalientSubtyper:
    """Rebuild a fitted :class:`SalientSubtyper` from :func:`subtyper_to_dict`'s output."""
    params = dict(data["params"])
    model = SalientSubtyper(**params)
    model.mean_ = np.asarray(data["mean"], dtype=np.float64)
    model.scale_ = np.asarray(data["scale"], dtype=np.float64)
    model._centres_std = np.asarray(data["centres_standardised"], dtype=np.float64)
    model.cluster_centers_ = model._centres_std * model.scale_ + model.mean_
    model.weights_ = np.asarray(data["weights"], dtype=np.float64)
    model.variances_ = np.asarray(data["variances"], dtype=np.float64)
    model.temperature_ = float(data["temperature"])
    model.inertia_ = float(data["inertia"])
    model.n_features_in_ = len(model.mean_)
    model._n_features_out = len(model._centres_std)
    return model


def stability_table(
    X: np.ndarray,
    k_values: list[int] | range,
    method: str = "kmeans",
    n_resamples: int = 20,
    random_state: int = 0,
) -> pd.DataFrame:
    """One row per K: split-half stability (mean and SD of ARI) and silhouette of the full fit.

    For each resample the patients are split into two random halves; a subtyper fitted on each half
    labels every patient, and the ARI between the two labelings measures reproducibility. K is
    chosen by the mean of stability and silhouette (both in [−1, 1]); ``chosen`` marks it.
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    rows = []
    for k in k_values:
        if k < 2 or 2 * k > len(X):
            continue
        aris = []
        for _ in range(n_resamples):
            order = rng.permutation(len(X))
            halves = order[: len(X) // 2], order[len(X) // 2 :]
            labels = [
                SalientSubtyper(k, method, n_init=5, random_state=int(rng.integers(2**31)))
                .fit(X[half])
                .predict(X)
                for half in halves
            ]
            aris.append(adjusted_rand_score(*labels))
        full = SalientSubtyper(k, method, random_state=random_state).fit(X)
        Z = (X - full.mean_) / full.scale_
        silhouette = float(silhouette_score(Z, full.labels_)) if len(set(full.labels_)) > 1 else float("nan")
        rows.append(
            {
                "k": k,
                "stability_ari_mean": float(np.mean(aris)),
                "stability_ari_sd": float(np.std(aris)),
                "silhouette": silhouette,
                "smallest_subtype": int(np.bincount(full.labels_, minlength=k).min()),
            }
        )
    table = pd.DataFrame(
        rows, columns=["k", "stability_ari_mean", "stability_ari_sd", "silhouette", "smallest_subtype"]
    )
    if table.empty:
        raise ValueError(f"no K in {list(k_values)} fits {len(X)} patients (need 2 ≤ K ≤ n/2)")
    table["score"] = (table["stability_ari_mean"] + table["silhouette"].fillna(-1.0)) / 2.0
    table["chosen"] = False
    table.loc[table["score"].idxmax(), "chosen"] = True
    return table
