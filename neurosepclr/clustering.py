"""Subtypes of patients in the salient space: a scikit-learn estimator and stability-based choice of K.

:class:`SalientSubtyper` standardises the coordinates, either against the controls (whitening by
their mean and shrunk covariance: distances become Mahalanobis distances in units of normal
variability) or with the fitted patients' own mean and spread, then clusters them with k-means or
a Gaussian mixture. ``predict`` assigns new subjects to the
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
from sklearn.covariance import LedoitWolf
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
from threadpoolctl import threadpool_limits

METHODS = ("kmeans", "gmm")
STANDARDISATIONS = ("controls", "patients", "none")


def reference_whitening(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix W of reference samples: ``(x − mean) @ W`` has identity covariance.

    The covariance is the Ledoit–Wolf shrinkage estimate (well conditioned when the reference has
    fewer samples than dimensions); with Σ = L Lᵀ (Cholesky), W = L⁻ᵀ so that W Wᵀ = Σ⁻¹ and
    ‖(x − y) @ W‖ is the Mahalanobis distance under the reference distribution.
    """
    estimate = LedoitWolf().fit(reference)
    lower = np.linalg.cholesky(estimate.covariance_)
    return estimate.location_, np.linalg.inv(lower).T


def _standardisation(standardise) -> str:
    """Accept the former boolean values (True: patients, False: none) of stored models."""
    if standardise is True:
        return "patients"
    if standardise is False:
        return "none"
    return standardise


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
    standardise : ``"controls"``: whiten with the mean and (Ledoit–Wolf) covariance of the
        controls' coordinates passed as ``fit(X, reference=controls)`` — the salient space should
        be null for controls, so the directions in which they still vary are shared variability
        leaking in, and are scaled down; ``"patients"``: z-score each coordinate with the fitted
        patients' mean and standard deviation; ``"none"``.
    directions : cluster the *direction* of each patient's whitened deviation from the controls'
        mean (unit-length coordinates), not its length: subtypes that differ in where the disease
        acts, not in how severe it is — the geometry of HYDRA's polytope of hyperplanes around the
        controls. Needs ``standardise="controls"``.
    n_init : restarts of the clustering algorithm (whitened salient spaces have several near-equal
        k-means optima, and few restarts land on different ones with different seeds).
    confidence : minimum membership probability for a confident assignment.
    random_state : seed.

    Attributes
    ----------
    labels_, cluster_centers_ (in the input coordinates), mean_ and whitening_ (standardised
    coordinates are ``(X − mean_) @ whitening_``), n_features_in_,
    temperature_ (within-cluster variance, k-means soft assignments), inertia_.
    """

    def __init__(
        self,
        n_subtypes: int = 3,
        method: str = "kmeans",
        standardise: str = "patients",  # a generic estimator default; the command's is in SubtypeConfig
        directions: bool = False,
        n_init: int = 50,
        confidence: float = 0.7,
        random_state=None,
    ):
        self.n_subtypes = n_subtypes
        self.method = method
        self.standardise = standardise
        self.directions = directions
        self.n_init = n_init
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X, y=None, reference=None):
        """Cluster ``X`` (patients); ``reference``: controls' coordinates, used if standardise="controls"."""
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (isinstance(self.n_subtypes, int | np.integer) and 1 <= self.n_subtypes <= len(X)):
            raise ValueError(f"n_subtypes must be an integer in [1, {len(X)}], got {self.n_subtypes!r}")
        standardise = _standardisation(self.standardise)
        if standardise not in STANDARDISATIONS:
            raise ValueError(f"standardise must be one of {STANDARDISATIONS}, got {self.standardise!r}")
        if self.directions and standardise != "controls":
            raise ValueError(
                'directions=True needs standardise="controls" (directions from the controls\' mean)'
            )
        if standardise == "controls":
            if reference is None:
                raise ValueError(
                    'standardise="controls" needs the controls\' coordinates: fit(X, reference=...)'
                )
            reference = np.asarray(reference, dtype=np.float64)
            if reference.ndim != 2 or reference.shape[1] != X.shape[1] or len(reference) < 2:
                raise ValueError(
                    f"reference must be at least 2 rows of {X.shape[1]} coordinates, got {reference.shape}"
                )
            self.mean_, self.whitening_ = reference_whitening(reference)
        elif standardise == "patients":
            scale = X.std(axis=0)
            self.mean_ = X.mean(axis=0)
            self.whitening_ = np.diag(1.0 / np.where(scale > 1e-12, scale, 1.0))
        else:
            self.mean_, self.whitening_ = np.zeros(X.shape[1]), np.eye(X.shape[1])
        Z = self._project(X)
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
        self.cluster_centers_ = np.linalg.solve(self.whitening_.T, centres.T).T + self.mean_
        self._n_features_out = self.n_subtypes
        self.labels_ = self.predict(X)
        return self

    def standardised(self, X) -> np.ndarray:
        """The coordinates the subtypes are found in: ``(X − mean_) @ whitening_``, unit length with
        ``directions``."""
        check_is_fitted(self, "cluster_centers_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._project(X)

    def _project(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean_) @ self.whitening_
        if self.directions:
            Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        return Z

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each subject to each subtype centre (standardised coordinates)."""
        Z = self.standardised(X)
        return np.sqrt(((Z[:, None, :] - self._centres_std[None]) ** 2).sum(axis=2))

    def predict_proba(self, X) -> np.ndarray:
        """Membership probabilities: GMM posteriors, or soft k-means assignments."""
        Z = self.standardised(X)
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

    def fit_predict(self, X, y=None, reference=None, **kwargs):
        return self.fit(X, reference=reference).labels_


def centred_on(model: SalientSubtyper, X: np.ndarray, labels: np.ndarray) -> SalientSubtyper:
    """A copy of the fitted ``model`` (same standardisation) whose subtypes are the groups ``labels``
    (0..K−1) of ``X``: centres, weights and spreads from those groups. ``predict`` then assigns new
    subjects to the nearest group, e.g. subtypes found by consensus
    (:mod:`neurosepclr.analysis.consensus`)."""
    import copy

    check_is_fitted(model, "cluster_centers_")
    k = model.n_subtypes
    if set(np.unique(labels)) != set(range(k)):
        raise ValueError(f"labels must hold every group 0..{k - 1}")
    Z = model.standardised(np.asarray(X, dtype=np.float64))
    centred = copy.deepcopy(model)
    centred._centres_std = np.stack([Z[labels == g].mean(axis=0) for g in range(k)])
    centred.cluster_centers_ = np.linalg.solve(model.whitening_.T, centred._centres_std.T).T + model.mean_
    centred.inertia_ = float(((Z - centred._centres_std[labels]) ** 2).sum())
    centred.temperature_ = max(centred.inertia_ / max(Z.size, 1), 1e-6)
    centred.weights_ = np.bincount(labels, minlength=k) / len(Z)
    if model.method == "kmeans":
        centred.variances_ = np.full((k, Z.shape[1]), centred.temperature_)
    else:
        centred.variances_ = np.stack([Z[labels == g].var(axis=0) + 1e-4 for g in range(k)])
    centred.labels_ = np.asarray(labels)
    return centred


def label_mapping(labels: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """The relabelling ``mapping[label]`` of groups 0..k−1 that agrees most with ``reference``
    (Hungarian assignment on the overlap counts); ``reference`` −1 marks rows that do not count."""
    from scipy.optimize import linear_sum_assignment

    counted = reference >= 0
    overlap = np.zeros((k, k))
    np.add.at(overlap, (labels[counted], reference[counted]), 1)
    source, target = linear_sum_assignment(-overlap)
    mapping = np.arange(k)
    mapping[source] = target
    return mapping


def bootstrap_labelings(
    model: SalientSubtyper,
    X: np.ndarray,
    X_all: np.ndarray,
    reference: np.ndarray | None = None,
    n_boot: int = 100,
    seed: int = 0,
    n_init: int = 10,
) -> np.ndarray:
    """(refits, len(X_all)) labels of ``X_all`` by refits of ``model`` on bootstrap resamples.

    Each refit clusters a bootstrap resample of the fitted patients ``X`` (and of the controls
    ``reference`` it whitens against); its subtypes are matched to the model's by the assignment
    (Hungarian) that agrees most on ``X``, then it labels ``X_all``. Refits that fail (a resample
    with fewer distinct patients than K) are left out; none succeeding raises ``ValueError``.
    """
    import warnings

    from sklearn.base import clone

    check_is_fitted(model, "cluster_centers_")
    X, X_all = np.asarray(X, dtype=np.float64), np.asarray(X_all, dtype=np.float64)
    base = model.predict(X)
    rng = np.random.default_rng(seed)
    labelings = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(X), len(X))
        ref = None if reference is None else reference[rng.integers(0, len(reference), len(reference))]
        refit = clone(model).set_params(n_init=n_init, random_state=int(rng.integers(2**31 - 1)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                refit.fit(X[rows], reference=ref)
        except ValueError:
            continue
        mapping = label_mapping(refit.predict(X), base, model.n_subtypes)
        labelings.append(mapping[refit.predict(X_all)])
    if not labelings:
        raise ValueError("no bootstrap refit succeeded: too few distinct patients for K subtypes")
    return np.stack(labelings)


def label_frequencies(labelings: np.ndarray, k: int) -> np.ndarray:
    """(N, k): the share of the rows of ``labelings`` (refits × N) that give each subject each label."""
    counts = np.zeros((labelings.shape[1], k))
    for labels in labelings:
        counts[np.arange(labelings.shape[1]), labels] += 1
    return counts / len(labelings)


def assignment_frequencies(
    model: SalientSubtyper,
    X: np.ndarray,
    X_all: np.ndarray,
    reference: np.ndarray | None = None,
    n_boot: int = 100,
    seed: int = 0,
    n_init: int = 10,
) -> np.ndarray:
    """(len(X_all), K): the share of bootstrap refits (:func:`bootstrap_labelings`) that put each
    subject in each of ``model``'s subtypes. A patient the model places between two subtypes lands
    on either side from one refit to the next: its frequency is the calibrated uncertainty a soft
    k-means membership cannot give (HYDRA and Smile-GAN report the same agreement over resamples).
    """
    labelings = bootstrap_labelings(model, X, X_all, reference, n_boot, seed, n_init)
    return label_frequencies(labelings, model.n_subtypes)


def co_association(labelings: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """(N, N): the share of labelings (rows of ``labelings``, refits × N) that put subjects i and j in
    the same group (HYDRA's consensus matrix; labels need not be matched across rows). With
    ``other`` (refits × M, the same refits) the (N, M) matrix between the two sets of subjects."""
    other = labelings if other is None else other
    total = np.zeros((labelings.shape[1], other.shape[1]))
    for labels, labels_other in zip(labelings, other, strict=True):
        total += labels[:, None] == labels_other[None, :]
    return total / len(labelings)


def consensus_clustering(co: np.ndarray, k: int) -> np.ndarray:
    """K groups of the subjects of a co-association matrix: average-linkage agglomerative clustering
    of the distance 1 − co (deterministic: no seed)."""
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
    return model.fit_predict(1.0 - co)


def consensus_assign(co_to_fitted: np.ndarray, fitted_labels: np.ndarray, k: int) -> np.ndarray:
    """Subjects outside the consensus (rows of ``co_to_fitted``, columns = fitted subjects) go to the
    consensus group they are most often grouped with (mean co-association with its members)."""
    means = np.stack([co_to_fitted[:, fitted_labels == g].mean(axis=1) for g in range(k)], axis=1)
    return means.argmax(axis=1)


def subtyper_to_dict(model: SalientSubtyper) -> dict:
    """Plain-JSON description of a fitted subtyper (no pickle)."""
    check_is_fitted(model, "cluster_centers_")
    return {
        "params": model.get_params(),
        "mean": model.mean_.tolist(),
        "whitening": model.whitening_.tolist(),
        "centres_standardised": model._centres_std.tolist(),
        "weights": np.asarray(model.weights_).tolist(),
        "variances": np.asarray(model.variances_).tolist(),
        "temperature": model.temperature_,
        "inertia": model.inertia_,
    }


def subtyper_from_dict(data: dict) -> SalientSubtyper:
    """Rebuild a fitted :class:`SalientSubtyper` from :func:`subtyper_to_dict`'s output."""
    params = dict(data["params"])
    params["standardise"] = _standardisation(params.get("standardise", "patients"))
    model = SalientSubtyper(**params)
    model.mean_ = np.asarray(data["mean"], dtype=np.float64)
    if "whitening" in data:
        model.whitening_ = np.asarray(data["whitening"], dtype=np.float64)
    else:  # written before the controls reference existed: a per-coordinate scale
        model.whitening_ = np.diag(1.0 / np.asarray(data["scale"], dtype=np.float64))
    model._centres_std = np.asarray(data["centres_standardised"], dtype=np.float64)
    model.cluster_centers_ = np.linalg.solve(model.whitening_.T, model._centres_std.T).T + model.mean_
    model.weights_ = np.asarray(data["weights"], dtype=np.float64)
    model.variances_ = np.asarray(data["variances"], dtype=np.float64)
    model.temperature_ = float(data["temperature"])
    model.inertia_ = float(data["inertia"])
    model.n_features_in_ = len(model.mean_)
    model._n_features_out = len(model._centres_std)
    return model


def _split_half_scores(
    X: np.ndarray, k: int, method, standardise, reference, directions, n_resamples, rng, random_state
) -> dict[str, float]:
    """Split-half stability (mean, SD of the ARI between two halves' models applied to all of ``X``),
    silhouette of the full fit in the standardised coordinates, and the smallest subtype's size."""
    aris = []
    for _ in range(n_resamples):
        order = rng.permutation(len(X))
        halves = order[: len(X) // 2], order[len(X) // 2 :]
        labels = [
            SalientSubtyper(
                k, method, standardise, directions, n_init=10, random_state=int(rng.integers(2**31))
            )
            .fit(X[half], reference=reference)
            .predict(X)
            for half in halves
        ]
        aris.append(adjusted_rand_score(*labels))
    full = SalientSubtyper(k, method, standardise, directions, random_state=random_state)
    full.fit(X, reference=reference)
    Z = full.standardised(X)
    silhouette = float(silhouette_score(Z, full.labels_)) if len(set(full.labels_)) > 1 else float("nan")
    return {
        "stability_ari_mean": float(np.mean(aris)),
        "stability_ari_sd": float(np.std(aris)),
        "silhouette": silhouette,
        "smallest_subtype": int(np.bincount(full.labels_, minlength=k).min()),
    }


def structureless_draws(X: np.ndarray, n_draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Null cohorts: as many subjects as ``X`` from one Gaussian with ``X``'s mean and covariance."""
    mean, covariance = X.mean(axis=0), np.atleast_2d(np.cov(X, rowvar=False))
    return [rng.multivariate_normal(mean, covariance, size=len(X)) for _ in range(n_draws)]


@threadpool_limits.wrap(limits=1)  # hundreds of tiny fits: threads cost more than they give (3x)
def stability_table(
    X: np.ndarray,
    k_values: list[int] | range,
    *,
    method: str = "kmeans",
    n_resamples: int = 20,
    random_state: int = 0,
    standardise: str = "patients",
    reference: np.ndarray | None = None,
    directions: bool = False,
    null_draws: int = 0,
) -> pd.DataFrame:
    """One row per K: split-half stability (mean and SD of ARI) and silhouette of the full fit.

    For each resample the patients are split into two random halves; a subtyper fitted on each half
    labels every patient, and the ARI between the two labelings measures reproducibility.
    ``standardise``, ``reference`` and ``directions`` are passed to every :class:`SalientSubtyper`
    fit; the silhouette is computed in the standardised coordinates.

    ``null_draws = 0``: K maximises ``score`` = (stability + silhouette) / 2. Both are high for K = 2
    even without clusters (k-means splits any elongated cloud reproducibly), which favours merging
    subtypes. ``null_draws = B > 0`` (Clest, Dudoit & Fridlyand 2002): the same two measures on B
    structureless cohorts (:func:`structureless_draws`, each with ``max(5, n_resamples // 2)``
    resamples) are subtracted, ``score`` = (stability − null stability + silhouette − null
    silhouette) / 2, and a best ``score`` ≤ 0 means no K is more reproducible than noise.
    ``chosen`` marks the K with the best score.
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    requested, k_values = list(k_values), [k for k in k_values if 2 <= k and 2 * k <= len(X)]
    if not k_values:
        raise ValueError(f"no K in {requested} fits {len(X)} patients (need 2 ≤ K ≤ n/2)")
    settings = (method, standardise, reference, directions)
    rows = [{"k": k, **_split_half_scores(X, k, *settings, n_resamples, rng, random_state)} for k in k_values]
    table = pd.DataFrame(rows)
    table["score"] = (table["stability_ari_mean"] + table["silhouette"].fillna(-1.0)) / 2.0
    if null_draws > 0:
        null_resamples = max(5, n_resamples // 2)
        null = [
            [_split_half_scores(Z, k, *settings, null_resamples, rng, random_state) for k in k_values]
            for Z in structureless_draws(X, null_draws, rng)
        ]
        table["null_stability"] = [
            np.mean([draw[i]["stability_ari_mean"] for draw in null]) for i in range(len(k_values))
        ]
        table["null_silhouette"] = [
            np.nanmean([draw[i]["silhouette"] for draw in null]) for i in range(len(k_values))
        ]
        excess = (table["stability_ari_mean"] - table["null_stability"]) + (
            table["silhouette"].fillna(-1.0) - table["null_silhouette"]
        )
        table["score"] = excess / 2.0
    table["chosen"] = False
    table.loc[table["score"].idxmax(), "chosen"] = True
    return table
