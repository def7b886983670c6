"""Validation probes: fitted on train, scored on val, k-means ARI against the truth."""

import numpy as np
import pandas as pd
import pytest

from neurosepclr.training.loop import selection_score
from neurosepclr.training.validation import cluster_structure, probe_scores

PATIENTS = {"standardise": "patients", "directions": False}


def test_probe_scores_on_structured_representations():
    rng = np.random.default_rng(0)
    n = 200
    group = np.where(np.arange(n) < 80, "background", "target")
    subtype = np.where(group == "target", np.array(["a", "b", "c"])[np.arange(n) % 3], None)
    age = rng.uniform(50, 90, n)
    salient = rng.normal(0, 0.2, (n, 4))
    for k, name in enumerate("abc"):
        salient[subtype == name, k] += 3.0
    common = rng.normal(0, 0.2, (n, 4))
    common[:, 0] += (age - 70) / 5
    table = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "group": group, "age": age})
    truth = pd.DataFrame({"participant_id": table["participant_id"], "subtype": subtype})
    split = np.where(np.arange(n) % 4 == 0, "val", "train")
    rule = {"standardise": "patients", "directions": False}
    scores = probe_scores(common, salient, table, split, truth, 0, **rule)
    assert scores["val/salient/diagnosis_bacc"] > 0.95
    assert scores["val/common/diagnosis_bacc"] == pytest.approx(0.5, abs=0.15)
    assert scores["val/common/age_r2"] > 0.9 and scores["val/salient/age_r2"] < 0.2
    assert scores["val/salient/kmeans_ari"] > 0.95
    relative = probe_scores(common, salient, table, split, truth, 0, standardise="controls", directions=True)
    assert relative["val/salient/kmeans_ari"] > 0.95


def _cohort(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    group = np.where(np.arange(n) < n // 3, "background", "target")
    table = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "group": group})
    return table, np.where(np.arange(n) % 5 == 0, "val", "train")


def test_cluster_structure_finds_k_and_prefers_structured_spaces():
    rng = np.random.default_rng(1)
    n = 240
    noise = rng.normal(0, 1.0, (n, 4))
    structured = noise * 0.3
    for k in range(3):  # three clusters, one axis each, the fourth axis noise only
        structured[np.arange(n) % 3 == k, k] += 4.0
    table, split = _cohort(n)
    clustered = cluster_structure(structured, table, split, range(2, 6), 0, **PATIENTS)
    unclustered = cluster_structure(noise, table, split, range(2, 6), 0, **PATIENTS)
    assert clustered["train/salient/cluster_k"] == 3
    assert clustered["train/salient/cluster_stability"] > 0.9
    assert clustered["train/salient/cluster_score"] > unclustered["train/salient/cluster_score"] + 0.4
    assert selection_score(clustered, "clusters") == clustered["train/salient/cluster_score"]


def test_cluster_structure_relative_to_controls_ignores_a_shared_site_split():
    rng = np.random.default_rng(2)
    n = 240
    table, split = _cohort(n)
    patients = np.flatnonzero(table["group"].to_numpy() == "target")
    salient = rng.normal(0, 0.2, (n, 6))
    salient[:, :3] += np.where(rng.random(n) < 0.5, -3.0, 3.0)[:, None]  # two sites, everyone alike
    for k in range(3):  # three subtypes: directions away from the controls on axes 3-5
        salient[patients[k::3], k + 3] += rng.uniform(1.5, 4.0, len(patients[k::3]))
    by_controls = cluster_structure(
        salient, table, split, range(2, 6), 0, standardise="controls", directions=True
    )
    by_patients = cluster_structure(salient, table, split, range(2, 6), 0, **PATIENTS)
    assert by_controls["train/salient/cluster_k"] == 3
    assert by_patients["train/salient/cluster_k"] != 3


def test_cluster_structure_is_empty_when_no_k_fits_and_selection_then_never_wins():
    table, split = _cohort(6)
    assert cluster_structure(np.zeros((6, 2)), table, split, [3], 0, **PATIENTS) == {}
    assert selection_score({}, "clusters") == float("-inf")
    assert selection_score({"val/salient/diagnosis_bacc": 0.9, "val/common/diagnosis_bacc": 0.6}) == (
        pytest.approx(0.8)
    )


def test_clusters_selection_subtracts_what_the_common_space_knows_of_the_diagnosis():
    structured = {"train/salient/cluster_score": 0.7}
    assert selection_score(structured | {"train/common/diagnosis_cv": 0.45}, "clusters") == 0.7
    assert selection_score(structured | {"train/common/diagnosis_cv": 0.9}, "clusters") == pytest.approx(0.3)
    assert selection_score(structured | {"train/common/diagnosis_cv": float("nan")}, "clusters") == 0.7


def test_common_diagnosis_is_cross_validated_over_the_training_subjects():
    rng = np.random.default_rng(3)
    n = 200
    table, split = _cohort(n)
    target = (table["group"] == "target").to_numpy()
    blind = rng.normal(0, 1, (n, 4))
    knowing = blind + 2.0 * target[:, None]
    salient = rng.normal(0, 1, (n, 4))
    scores = {
        name: probe_scores(common, salient, table, split, None, 0, **PATIENTS)["train/common/diagnosis_cv"]
        for name, common in (("blind", blind), ("knowing", knowing))
    }
    assert scores["knowing"] > 0.9 and 0.3 < scores["blind"] < 0.65
