"""Validation probes: fitted on train, scored on val, k-means ARI against the truth."""

import numpy as np
import pandas as pd
import pytest

from neurosepclr.training.probes import probe_scores


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
    scores = probe_scores(common, salient, table, split, truth)
    assert scores["val/salient/diagnosis_bacc"] > 0.95
    assert scores["val/common/diagnosis_bacc"] == pytest.approx(0.5, abs=0.15)
    assert scores["val/common/age_r2"] > 0.9 and scores["val/salient/age_r2"] < 0.2
    assert scores["val/salient/kmeans_ari"] > 0.95
