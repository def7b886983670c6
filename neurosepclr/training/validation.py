"""Validation during training: representations before the heads, linear probes, k-means ARI.

Probes are fitted on the training split and scored on the validation split, with the model in eval
mode: patient vs control balanced accuracy and age R² for each space, and, when the cohort's truth
is known, the adjusted Rand index of the validation patients' subtypes assigned by a subtyper
fitted on the training patients (as ``subtype`` does).
:func:`cluster_structure` needs no labels: how reproducibly the training patients' salient
coordinates cluster (split-half stability and silhouette), the criterion of ``train.select: clusters``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score

from neurosepclr.clustering import SalientSubtyper, stability_table
from neurosepclr.probes import balanced_accuracy_probe, held_out_predictions, r2_probe


def probe_scores(
    common: np.ndarray,
    salient: np.ndarray,
    table: pd.DataFrame,
    split: np.ndarray,
    truth: pd.DataFrame | None,
    seed: int,
    *,
    standardise: str,
    directions: bool,
) -> dict[str, float]:
    """Validation probe scores for both spaces (names like ``val/salient/diagnosis_bacc``).

    ``train/common/diagnosis_cv`` is the diagnosis read from the *training* subjects' common
    coordinates by 5-fold cross-validation: steadier than the few validation subjects, it is the
    penalty of ``train.select: clusters``. With ``truth``, ``val/salient/kmeans_ari`` is the ARI of
    the held-out patients' subtypes as assigned by a
    :class:`~neurosepclr.clustering.SalientSubtyper` (K = true K, the given standardisation)
    fitted on the training patients — what ``subtype`` and ``evaluate`` report.
    """
    train, val = split == "train", split == "val"
    group = table["group"].to_numpy()
    scores: dict[str, float] = {}
    for space, x in (("common", common), ("salient", salient)):
        scores[f"val/{space}/diagnosis_bacc"] = balanced_accuracy_probe(
            x[train], group[train], x[val], group[val]
        )
        if "age" in table:
            age = pd.to_numeric(table["age"], errors="coerce").to_numpy()
            ok = np.isfinite(age)
            scores[f"val/{space}/age_r2"] = r2_probe(
                x[train & ok], age[train & ok], x[val & ok], age[val & ok]
            )
    predicted, rows = held_out_predictions(common[train], group[train], None, seed, classification=True)
    if predicted is not None:
        scores["train/common/diagnosis_cv"] = float(balanced_accuracy_score(group[train][rows], predicted))
    if truth is not None:
        merged = table[["participant_id"]].merge(
            truth[["participant_id", "subtype"]], on="participant_id", how="left"
        )
        subtype = merged["subtype"].to_numpy()
        known = (group == "target") & pd.notna(subtype)
        fit_rows, held = train & known, val & known
        references = train & (group != "target")
        k = len(set(subtype[known]))
        enough_controls = standardise != "controls" or references.sum() >= 2
        if held.sum() > k >= 2 and fit_rows.sum() >= k and enough_controls:
            model = SalientSubtyper(k, standardise=standardise, directions=directions, random_state=seed)
            model.fit(salient[fit_rows], reference=salient[references])
            labels = model.predict(salient[held])
            scores["val/salient/kmeans_ari"] = float(adjusted_rand_score(subtype[held], labels))
    return scores


def cluster_structure(
    salient: np.ndarray,
    table: pd.DataFrame,
    split: np.ndarray,
    k_values: list[int] | range,
    seed: int,
    *,
    standardise: str,
    directions: bool,
    n_resamples: int = 10,
) -> dict[str, float]:
    """Label-free subtype structure of the training patients' salient coordinates.

    The K of ``k_values`` with the best mean of split-half stability and silhouette
    (:func:`neurosepclr.clustering.stability_table` without null draws: at every evaluation
    the null-referenced score of ``subtype --k auto`` would cost several times more); its ``score``
    (that mean, in [−1, 1]) is the ``train.select: clusters`` criterion.
    ``standardise="controls"`` whitens against the training controls and ``directions`` clusters
    unit-length deviations, as ``subtype`` does.
    """
    target = table["group"].to_numpy() == "target"
    patients, controls = (split == "train") & target, (split == "train") & ~target
    if not any(2 <= k <= patients.sum() // 2 for k in k_values):
        return {}
    if standardise == "controls" and controls.sum() < 2:
        return {}
    table_k = stability_table(
        salient[patients],
        k_values,
        n_resamples=n_resamples,
        random_state=seed,
        standardise=standardise,
        reference=salient[controls],
        directions=directions,
    )
    row = table_k.loc[table_k["chosen"]].iloc[0]
    return {
        "train/salient/cluster_k": float(row["k"]),
        "train/salient/cluster_stability": float(row["stability_ari_mean"]),
        "train/salient/cluster_silhouette": float(row["silhouette"]),
        "train/salient/cluster_score": float(row["score"]),
    }
