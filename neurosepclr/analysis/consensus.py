"""Subtypes by consensus across several trained runs (seeds) and bootstrap refits.

One SepCLR run's subtypes depend on its seed (benchmarks/README.md). Following HYDRA's consensus
clustering (Varol et al., NeuroImage 2017), each run's salient space is clustered on the training
patients, refitted on bootstrap resamples, and every labelling of the patients enters one
co-association matrix (the share of labellings that group two patients together). The consensus
subtypes are one average-linkage clustering of that matrix over the training patients; held-out
patients join the group they are most often grouped with. Agreement is reported per patient (the
share of labellings, matched to the consensus, that agree with it) and per run (ARI between runs).
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


def consensus_subtypes(spaces: list[Embedded], k: int, settings, seed: int = 0) -> Consensus:
    """Consensus of ``len(spaces)`` runs' subtypes (each run: its full fit and ``settings.bootstrap``
    refits); every space must hold the same subjects in the same order with the same split."""
    patients, fitted = spaces[0].is_target, spaces[0].fit_rows
    labellings, full_rows = [], []  # full_rows: where each run's own fit sits among the labellings
    for number, space in enumerate(spaces):
        model = run_subtyper(space, k, settings, seed)
        full_rows.append(sum(len(block) for block in labellings))
        labellings.append(model.predict(space.salient)[None])
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
    matched = np.stack([label_mapping(labels, reference, k)[labels] for labels in stack])
    run_labels = matched[full_rows]
    pairs = pairwise_ari(run_labels, patients)
    return Consensus(
        index,
        label_frequencies(matched, k),
        run_labels,
        run_agreement(run_labels, index, patients, pairs),
        _mean(pairs.values()),
    )


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
