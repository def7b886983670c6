"""Subtypes by consensus across several trained runs (seeds) and bootstrap refits.

One SepCLR run's subtypes depend on its seed (benchmarks/README.md). Two ways to combine runs
(``subtype.consensus_method``), both fitted on the training patients, held-out patients assigned:

* ``joint`` (default): each run's salient coordinates are standardised as its own subtyper sees
  them (whitened by the training controls; unit-length directions), the runs are placed side by
  side, each scaled by 1/√R, and clustered once. Squared distances there are the mean of the runs'
  squared distances, so k-means on them is kernel k-means on the mean of the runs' kernels (the mean
  cosine similarity of two patients' deviations): graded similarity is averaged, not hard labels.
  Each patient's frequency comes from bootstrap refits of that one clustering.
* ``coassociation``: following HYDRA's consensus clustering (Varol et al., NeuroImage 2017), each
  run's salient space is clustered on the training patients, refitted on bootstrap resamples, and
  every labelling enters one co-association matrix (the share of labellings that group two patients
  together), clustered once by average linkage; held-out patients join the group they are most often
  grouped with; the frequency is the share of labellings, matched to the consensus, that agree.

Agreement between the runs is reported either way: each run's own subtypes, matched to the
consensus, and the ARI between runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.representation import Embedded
from neurosepclr.clustering import (
    SalientSubtyper,
    bootstrap_labelings,
    co_association,
    consensus_assign,
    consensus_clustering,
    label_frequencies,
    label_mapping,
)


@dataclass
class Consensus:
    index: np.ndarray  # consensus group of every subject (−1 for controls)
    frequency: np.ndarray  # (subjects, K): share of matched labellings giving each group
    run_labels: np.ndarray  # (runs, subjects): each run's own full fit, matched to the consensus
    runs: pd.DataFrame  # one row per run: ARI with the consensus and mean ARI with the other runs
    mean_pairwise_ari: float  # mean ARI over every pair of runs (patients)
    first_subtyper: SalientSubtyper  # the first run's own subtyper (``run_subtyper``), fitted once


def run_subtyper(space: Embedded, k: int, settings, seed: int) -> SalientSubtyper:
    """One run's subtyper, fitted on its training patients (whitened by its training controls)."""
    model = SalientSubtyper(
        k,
        settings.method,
        settings.standardise,
        settings.cluster_directions(),
        confidence=settings.confidence,
        random_state=seed,
    )
    return model.fit(space.salient[space.fit_rows], reference=space.salient[space.reference_rows])


def refit_labellings(model: SalientSubtyper, space: Embedded, settings, seed: int) -> np.ndarray:
    """(``settings.bootstrap`` refits, subjects): labels of every subject by refits of ``model`` on
    bootstrap resamples of the training patients (and of the training controls it whitens against),
    matched to ``model``'s subtypes."""
    reference = space.salient[space.reference_rows] if settings.standardise == "controls" else None
    return bootstrap_labelings(
        model, space.salient[space.fit_rows], space.salient, reference, n_boot=settings.bootstrap, seed=seed
    )


def joint_space(spaces: list[Embedded], models: list[SalientSubtyper]) -> Embedded:
    """Every run's standardised salient coordinates (``models[r].standardised``) side by side, each
    run scaled by 1/√R so that squared distances are the mean of the runs' squared distances."""
    runs = zip(spaces, models, strict=True)
    coordinates = np.hstack([model.standardised(space.salient) for space, model in runs])
    first = spaces[0]
    return Embedded(first.data, first.split, first.common[:, :0], coordinates / np.sqrt(len(spaces)))


def consensus_subtypes(spaces: list[Embedded], k: int, settings, seed: int = 0) -> Consensus:
    """Consensus of ``len(spaces)`` runs' subtypes by ``settings.consensus_method`` (module docstring);
    every space must hold the same subjects in the same order with the same split."""
    patients, fitted = spaces[0].is_target, spaces[0].fit_rows
    models = [run_subtyper(space, k, settings, seed) for space in spaces]
    own = np.stack([model.predict(space.salient) for space, model in zip(spaces, models, strict=True)])
    if settings.consensus_method == "joint":
        index, matched = _joint_consensus(joint_space(spaces, models), k, settings, seed)
    else:
        index, matched = _coassociation_consensus(spaces, models, own, k, settings, seed)
    reference = np.where(fitted, index, -1)
    run_labels = np.stack([label_mapping(labels, reference, k)[labels] for labels in own])
    pairs = pairwise_ari(run_labels, patients)
    return Consensus(
        index,
        label_frequencies(matched, k),
        run_labels,
        run_agreement(run_labels, index, patients, pairs),
        _mean(pairs.values()),
        models[0],
    )


def _joint_consensus(joint: Embedded, k: int, settings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The subtypes of one clustering of the joint space, and the labellings of its bootstrap refits."""
    model = SalientSubtyper(k, settings.method, "none", False, random_state=seed)
    model.fit(joint.salient[joint.fit_rows])
    labels = model.predict(joint.salient)
    labellings = [labels[None]]
    if settings.bootstrap:
        fitted = joint.salient[joint.fit_rows]
        refits = bootstrap_labelings(model, fitted, joint.salient, n_boot=settings.bootstrap, seed=seed)
        labellings.append(refits)
    return np.where(joint.is_target, labels, -1), np.concatenate(labellings)


def _coassociation_consensus(
    spaces: list[Embedded], models: list[SalientSubtyper], own: np.ndarray, k: int, settings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The subtypes of one clustering of the co-association of every run's fit and bootstrap refits,
    and every labelling matched to them."""
    patients, fitted = spaces[0].is_target, spaces[0].fit_rows
    labellings = []
    for number, (space, model, labels) in enumerate(zip(spaces, models, own, strict=True)):
        labellings.append(labels[None])
        if settings.bootstrap:
            labellings.append(refit_labellings(model, space, settings, seed + 1000 * number))
    stack = np.concatenate(labellings)
    fitted_labels = consensus_clustering(co_association(stack[:, fitted]), k)
    index = np.full(len(patients), -1)
    index[fitted] = fitted_labels
    others = patients & ~fitted
    if others.any():
        co = co_association(stack[:, others], stack[:, fitted])
        index[others] = consensus_assign(co, fitted_labels, k)
    reference = np.where(fitted, index, -1)
    return index, np.stack([label_mapping(labels, reference, k)[labels] for labels in stack])


def pairwise_ari(run_labels: np.ndarray, patients: np.ndarray) -> dict[tuple[int, int], float]:
    """ARI of the patients' subtypes between every pair of runs."""
    return {
        (a, b): float(adjusted_rand_score(run_labels[a, patients], run_labels[b, patients]))
        for a, b in combinations(range(len(run_labels)), 2)
    }


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def run_agreement(
    run_labels: np.ndarray, consensus: np.ndarray, patients: np.ndarray, pairs: dict[tuple[int, int], float]
) -> pd.DataFrame:
    """Per run: ARI of its subtypes with the consensus and mean ARI with every other run (patients)."""
    return pd.DataFrame(
        {
            "run": run,
            "ari_with_consensus": adjusted_rand_score(run_labels[run, patients], consensus[patients]),
            "mean_ari_with_other_runs": _mean(ari for pair, ari in pairs.items() if run in pair),
        }
        for run in range(len(run_labels))
    )
