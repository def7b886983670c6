"""SalientSubtyper: scikit-learn conventions, recovery of known clusters, JSON round trip, stability."""

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from neurosepclr.clustering import (
    SalientSubtyper,
    soft_assignments,
    stability_table,
    subtyper_from_dict,
    subtyper_to_dict,
)


@parametrize_with_checks(
    [
        SalientSubtyper(2, "kmeans", n_init=5, random_state=0),
        SalientSubtyper(2, "gmm", n_init=5, random_state=0),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n_per: int, k: int = 3, dim: int = 6, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), dim)), labels


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_fit_on_some_predict_the_others(method):
    x, y = blobs(40)
    fit = np.arange(len(y)) % 2 == 0
    model = SalientSubtyper(3, method, random_state=0).fit(x[fit])
    assert adjusted_rand_score(y[fit], model.labels_) == 1.0
    assert adjusted_rand_score(y[~fit], model.predict(x[~fit])) == 1.0
    proba = model.predict_proba(x[~fit])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba.argmax(axis=1) == model.predict(x[~fit])).all()
    assert proba.max(axis=1).min() > 0.9  # well-separated clusters: confident memberships
    assert model.cluster_centers_.shape == (3, x.shape[1])
    assert model.transform(x).shape == (len(x), 3)


def test_ambiguous_subject_gets_split_membership():
    x, _ = blobs(30, k=2, spread=0.2)
    model = SalientSubtyper(2, random_state=0).fit(x)
    midpoint = model.cluster_centers_.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(midpoint)[0], [0.5, 0.5], atol=1e-6)


def test_json_round_trip_predicts_identically():
    x, _ = blobs(30)
    for method in ("kmeans", "gmm"):
        model = SalientSubtyper(3, method, random_state=1).fit(x)
        again = subtyper_from_dict(json.loads(json.dumps(subtyper_to_dict(model))))
        np.testing.assert_array_equal(again.predict(x), model.predict(x))
        np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x))


def test_soft_assignments_are_a_softmax_of_negative_distances():
    d2 = np.array([[0.0, 2.0], [2.0, 2.0]])
    p = soft_assignments(d2, temperature=1.0)
    np.testing.assert_allclose(p[0], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    np.testing.assert_allclose(p[1], [0.5, 0.5])


def test_stability_table_chooses_the_true_number_of_clusters():
    x, _ = blobs(30, k=3, spread=0.5)
    table = stability_table(x, range(2, 7), n_resamples=8, random_state=0)
    assert list(table["k"]) == [2, 3, 4, 5, 6]
    assert table.loc[table["chosen"], "k"].item() == 3
    assert table.loc[table["k"] == 3, "stability_ari_mean"].item() > 0.95


def test_null_referenced_score_is_near_zero_without_clusters_and_high_with_them():
    rng = np.random.default_rng(0)
    structureless = rng.normal(size=(120, 5)) * [3.0, 1.5, 1.0, 1.0, 1.0]  # elongated: K = 2 splits it stably
    raw = stability_table(structureless, range(2, 5), n_resamples=6, random_state=0, standardise="none")
    referenced = stability_table(
        structureless, range(2, 5), n_resamples=6, random_state=0, standardise="none", null_draws=4
    )
    assert raw.loc[raw["k"] == 2, "stability_ari_mean"].item() > 0.5  # stable, yet no subtypes
    assert {"null_stability", "null_silhouette"} <= set(referenced.columns)
    assert referenced["score"].max() < 0.1 and raw["score"].max() > 0.5
    x, _ = blobs(30, k=3, spread=0.5)
    clustered = stability_table(x, range(2, 6), n_resamples=6, random_state=0, null_draws=4)
    assert clustered.loc[clustered["chosen"], "k"].item() == 3
    assert clustered["score"].max() > 0.3


def test_without_null_draws_the_score_is_the_raw_mean_of_stability_and_silhouette():
    x, _ = blobs(20, k=3, spread=1.0)
    raw = stability_table(x, range(2, 5), n_resamples=5, random_state=3, null_draws=0)
    assert "null_stability" not in raw
    np.testing.assert_allclose(raw["score"], (raw["stability_ari_mean"] + raw["silhouette"]) / 2)


def test_stability_table_refuses_impossible_ranges():
    x, _ = blobs(3, k=1)
    with pytest.raises(ValueError, match="no K"):
        stability_table(x, range(2, 4))


def test_invalid_parameters_are_named():
    x, _ = blobs(5)
    with pytest.raises(ValueError, match="method"):
        SalientSubtyper(2, "spectral").fit(x)
    with pytest.raises(ValueError, match="n_subtypes"):
        SalientSubtyper(100).fit(x)


def site_confounded_cohort(seed: int = 0):
    """Salient coordinates where two sites shift controls and patients alike along four axes (large
    shared variability), while three subtypes differ along two axes in which controls barely vary."""
    rng = np.random.default_rng(seed)
    site_shift = np.array([4.0, 4.0, 4.0, 4.0, 0.0, 0.0])

    def subjects(n, centres):
        site = rng.integers(0, 2, size=n)
        label = rng.integers(0, len(centres), size=n)
        x = np.outer(site - 0.5, site_shift) + centres[label] + rng.normal(scale=0.2, size=(n, 6))
        return x, label

    subtype_centres = np.zeros((3, 6))
    subtype_centres[:, 4:] = [[1.5, 0.0], [0.0, 1.5], [-1.5, -1.5]]
    controls, _ = subjects(80, np.zeros((1, 6)))
    patients, labels = subjects(90, subtype_centres)
    return controls, patients, labels


def test_controls_whitening_removes_shared_variability_that_patient_scaling_keeps():
    controls, patients, labels = site_confounded_cohort()
    fit = np.arange(len(labels)) % 2 == 0
    by_controls = SalientSubtyper(3, standardise="controls", random_state=0).fit(
        patients[fit], reference=controls
    )
    by_patients = SalientSubtyper(3, standardise="patients", random_state=0).fit(patients[fit])
    assert adjusted_rand_score(labels[~fit], by_controls.predict(patients[~fit])) == 1.0
    assert adjusted_rand_score(labels[~fit], by_patients.predict(patients[~fit])) < 0.5  # split by site
    np.testing.assert_array_equal(by_controls.predict(by_controls.cluster_centers_), np.arange(3))


def test_controls_whitening_gives_the_reference_identity_covariance():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(4, 4))
    reference = rng.normal(size=(5000, 4)) @ mixing + 3.0
    model = SalientSubtyper(2, standardise="controls", random_state=0).fit(
        reference[:50], reference=reference
    )
    whitened = model.standardised(reference)
    np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(4), atol=0.05)


def test_controls_standardisation_needs_a_matching_reference():
    x, _ = blobs(10)
    with pytest.raises(ValueError, match="reference"):
        SalientSubtyper(2, standardise="controls").fit(x)
    with pytest.raises(ValueError, match="reference"):
        SalientSubtyper(2, standardise="controls").fit(x, reference=x[:, :3])
    with pytest.raises(ValueError, match="standardise"):
        SalientSubtyper(2, standardise="robust").fit(x)


def test_controls_whitened_model_round_trips_and_old_models_still_load():
    controls, patients, _ = site_confounded_cohort()
    model = SalientSubtyper(3, standardise="controls", random_state=0).fit(patients, reference=controls)
    again = subtyper_from_dict(json.loads(json.dumps(subtyper_to_dict(model))))
    np.testing.assert_allclose(again.predict_proba(patients), model.predict_proba(patients))
    old = SalientSubtyper(3, standardise="patients", random_state=0).fit(patients)
    stored = subtyper_to_dict(old)
    stored["params"]["standardise"] = True  # models written before session 5 stored a boolean and a scale
    stored["scale"] = (1.0 / np.diag(old.whitening_)).tolist()
    del stored["whitening"]
    np.testing.assert_array_equal(subtyper_from_dict(stored).predict(patients), old.predict(patients))


def test_stability_table_with_controls_reference_finds_the_subtypes_not_the_sites():
    controls, patients, _ = site_confounded_cohort()
    table = stability_table(
        patients, range(2, 5), n_resamples=6, random_state=0, standardise="controls", reference=controls
    )
    assert table.loc[table["chosen"], "k"].item() == 3


def rays_from_controls(seed: int):
    """Three subtypes of imbalanced sizes, each a direction away from the controls, with severities
    (lengths) that vary fourfold within a subtype."""
    rng = np.random.default_rng(seed)
    controls = rng.normal(size=(100, 5))
    labels = np.repeat(np.arange(3), [70, 20, 10])
    severity = rng.uniform(1.5, 9.0, size=len(labels))
    patients = severity[:, None] * np.eye(5)[labels] + rng.normal(scale=0.3, size=(len(labels), 5))
    return controls, patients, labels


def test_directions_cluster_where_patients_deviate_not_how_far():
    controls, patients, labels = rays_from_controls(seed=4)
    by_direction = SalientSubtyper(3, standardise="controls", directions=True, random_state=0)
    by_position = SalientSubtyper(3, standardise="controls", random_state=0)
    assert adjusted_rand_score(labels, by_direction.fit(patients, reference=controls).labels_) == 1.0
    assert (
        adjusted_rand_score(labels, by_position.fit(patients, reference=controls).labels_) < 0.5
    )  # severity split
    unit = by_direction.standardised(patients * 3.0 - 2.0 * by_direction.mean_)  # scaled deviations
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0)
    assert (by_direction.predict(patients * 3.0 - 2.0 * by_direction.mean_) == by_direction.labels_).all()


def test_directions_need_the_controls_reference():
    _, patients, _ = rays_from_controls(seed=0)
    with pytest.raises(ValueError, match="directions"):
        SalientSubtyper(3, standardise="patients", directions=True).fit(patients)
