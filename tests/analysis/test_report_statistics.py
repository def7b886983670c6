"""The report's statistics: Welch z, the streaming GLM's effect sizes, bootstrap assignment
frequencies, cluster tables named with the atlas, the quality rules and the sidecars."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurosepclr.analysis.clusters import atlas_labels_at, cluster_table
from neurosepclr.analysis.quality import RED, probe_checks, stability_check
from neurosepclr.analysis.sidecars import describe_columns
from neurosepclr.analysis.statistics import (
    StreamingGLM,
    bootstrap_interval,
    chance_level,
    covariate_design,
    welch_z,
)
from neurosepclr.atlases import full_region_name, load_atlas
from neurosepclr.clustering import SalientSubtyper, assignment_frequencies


def test_welch_z_matches_scipy_one_sided_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 1.0, 12), rng.normal(0.0, 2.0, 30)
    z = welch_z(
        np.array([a.mean()]),
        np.array([a.var(ddof=1)]),
        12,
        np.array([b.mean()]),
        np.array([b.var(ddof=1)]),
        30,
    )
    p = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert z[0] == pytest.approx(stats.norm.isf(p), rel=1e-6)
    huge = welch_z(np.array([100.0]), np.array([1e-4]), 20, np.array([0.0]), np.array([1e-4]), 20)
    assert np.isfinite(huge).all() and huge[0] > 10  # log survival: no overflow to inf


def test_streaming_glm_gives_cohens_d_and_ols_t():
    rng = np.random.default_rng(1)
    groups = np.array(["control"] * 20 + ["S1"] * 10, dtype=object)
    values = rng.normal(0, 1, (30, 50))
    values[groups == "S1", :10] -= 1.5
    design, names, used = covariate_design(pd.DataFrame(index=range(30)), groups, "control")
    assert names == ["intercept", "group=S1"] and used == []
    glm = StreamingGLM(design, 50)
    for row, y in enumerate(values):
        glm.add(row, y)
    d, t = glm.effect_sizes([1])
    patients, controls = values[groups == "S1"], values[groups == "control"]
    pooled = np.sqrt(((patients.var(0, ddof=1) * 9) + controls.var(0, ddof=1) * 19) / 28)
    np.testing.assert_allclose(d[0], (patients.mean(0) - controls.mean(0)) / pooled, rtol=1e-8)
    np.testing.assert_allclose(t[0], stats.ttest_ind(patients, controls).statistic, rtol=1e-8)
    assert d[0, :10].mean() < -1 and abs(d[0, 10:].mean()) < 0.5


def test_covariates_confounded_with_a_group_are_left_out():
    groups = np.array(["control"] * 6 + ["S1"] * 6, dtype=object)
    table = pd.DataFrame({"age": np.arange(12.0), "site": ["a"] * 6 + ["b"] * 6, "sex": list("MF") * 6})
    _, names, used = covariate_design(table, groups, "control")
    assert used == ["age", "sex"] and "site=b" not in names


def test_an_ambiguous_patient_gets_a_low_assignment_frequency():
    rng = np.random.default_rng(2)
    controls = rng.normal(0, 1, (40, 2))
    left = rng.normal(0, 0.3, (25, 2)) + np.array([-4, 4])
    right = rng.normal(0, 0.3, (25, 2)) + np.array([4, 4])
    patients = np.vstack([left, right])
    model = SalientSubtyper(2, standardise="controls", random_state=0).fit(patients, reference=controls)
    between = np.array([[0.0, 4.0]])  # as close to one subtype as to the other
    frequency = assignment_frequencies(model, patients, np.vstack([patients, between]), controls, 60, seed=0)
    np.testing.assert_allclose(frequency.sum(axis=1), 1.0)
    assigned = model.predict(patients)
    assert (frequency[np.arange(50), assigned] >= 0.95).all()  # clear patients keep their subtype
    assert frequency[-1].max() < 0.9  # the one in between does not


def test_cluster_peaks_lie_in_the_region_they_name():
    atlas = load_atlas("aal")
    stat = np.zeros(atlas.labels.shape)
    lookup = {name: index for index, name in atlas.names.items()}
    for region, value in (("Hippocampus_L", 5.0), ("Precuneus_R", 4.0)):
        voxels = np.argwhere(atlas.labels == lookup[region])
        centre = voxels[len(voxels) // 2]
        stat[tuple(voxels.T)] = value * 0.5
        stat[tuple(centre)] = value
    table = cluster_table(stat, atlas.affine, 1.0, [atlas], stat_name="z")
    assert set(table["aal_peak_region"]) == {"hippocampus (left)", "precuneus (right)"}
    peaks = table[["peak_x_mm", "peak_y_mm", "peak_z_mm"]].to_numpy()
    named = [full_region_name("aal", atlas.names[int(i)]) for i in atlas_labels_at(atlas, peaks)]
    assert named == table["aal_peak_region"].tolist()
    assert (table["volume_mm3"] > 0).all() and table["volume_mm3"].is_monotonic_decreasing
    hippocampus = table[table["aal_peak_region"] == "hippocampus (left)"].iloc[0]
    assert hippocampus["peak_hemisphere"] == "left" and hippocampus["aal_regions"].startswith(
        "hippocampus (left) 100%"
    )


@pytest.mark.parametrize(
    ("name", "full"),
    [("OFClat_R", "lateral orbital gyrus (right)"), ("Vermis_3", "vermis, lobule III"),
     ("ctx-lh-superiorfrontal", "ctx superiorfrontal (left)")],
)  # fmt: skip
def test_full_region_names(name, full):
    atlas = "aal" if "_" in name and not name.startswith("ctx") else "desikan_killiany"
    assert full_region_name(atlas, name) == full


def _probes(salient_dx, common_dx, site):
    rows = []
    for space, dx in (("salient", salient_dx), ("common", common_dx)):
        rows.append({"space": space, "task": "diagnosis", "metric": "balanced_accuracy", "value": dx, "n": 40,
                     "chance": 0.5, "ci_low": dx - 0.1, "ci_high": dx + 0.1})  # fmt: skip
    rows.append({"space": "salient", "task": "site", "metric": "balanced_accuracy", "value": site, "n": 40,
                 "chance": 1 / 3, "ci_low": site - 0.1, "ci_high": site + 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def test_quality_box_rules():
    at_chance = {c.check: c.status for c in probe_checks(_probes(0.52, 0.5, 0.3))}
    assert at_chance["salient space: diagnosis"] == RED
    good = {c.check: c.status for c in probe_checks(_probes(0.92, 0.55, 0.35))}
    assert good == {"salient space: diagnosis": "green", "common space: diagnosis": "green",
                    "salient space: site/scanner": "green"}  # fmt: skip
    leaky = {c.check: c.status for c in probe_checks(_probes(0.71, 0.75, 0.67))}
    assert leaky["common space: diagnosis"] == RED and leaky["salient space: site/scanner"] == RED
    stability = pd.DataFrame({"k": [2, 3], "stability_ari_mean": [0.9, 0.5], "stability_ari_sd": [0.1, 0.2],
                              "null_stability": [0.6, 0.6], "score": [0.2, -0.1]})  # fmt: skip
    forced = {c.check: (c.status, c.value) for c in stability_check(stability, 3, forced=True)}
    assert forced["number of subtypes"] == ("amber", "K = 3 (forced)")
    assert forced["subtypes above noise"][0] == RED


def test_fast_scores_equal_sklearn():
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score

    from neurosepclr.analysis.statistics import FAST_SCORES

    rng = np.random.default_rng(3)
    y, p = rng.choice(list("abc"), 40), rng.choice(list("abcd"), 40)
    assert FAST_SCORES["balanced_accuracy"](y, p) == pytest.approx(balanced_accuracy_score(y, p))
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert FAST_SCORES["mae"](a, b) == pytest.approx(mean_absolute_error(a, b))
    assert FAST_SCORES["r2"](a, b) == pytest.approx(r2_score(a, b))


def test_intervals_and_chance_levels():
    truth = np.array(["a", "b"] * 50, dtype=object)
    low, high = bootstrap_interval(truth, truth, lambda y, p: float(np.mean(y == p)))
    assert low == high == 1.0
    assert chance_level("balanced_accuracy", np.array(["a", "b", "c"])) == pytest.approx(1 / 3)
    assert chance_level("mae", np.array([1.0, 3.0]), np.array([2.0])) == 1.0


def test_every_documented_column_and_an_undocumented_one():
    entries = describe_columns(["participant_id", "p_S2", "freq_S10", "common_3", "sex=F", "aal_peak_region"])
    assert all(entry["Description"] for entry in entries.values())
    with pytest.raises(KeyError, match="no description"):
        describe_columns(["mystery"])
