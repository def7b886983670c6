"""Shared scoring of the benchmark scripts: representations joined with the simulated truth, and the
held-out subtype ARI of a :class:`~neurosepclr.clustering.SalientSubtyper` fitted on training patients.

Not a script: the benchmarks import it as a sibling module (``python benchmarks/X.py`` puts
``benchmarks/`` first on ``sys.path``). Conventions: ``is_target`` marks patients (cohort role
``target``), ``train`` the rows of the training split; held-out rows are the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.representation import Embedded, encode, fit_cpca_encoder, flat_inputs
from neurosepclr.clustering import SalientSubtyper
from neurosepclr.training.data import TARGET

TRAIN = "train"  # the training side of split.tsv / embeddings.tsv ("val": held out)

# (column prefix, standardise, directions) of the three subtypings salient_sweep.py and
# seed_concat.py compare: per-patient z-score, controls whitening, and + directions (the default)
STANDARDISATIONS = (("", "patients", False), ("ctrl_", "controls", False), ("dir_", "controls", True))


def read_embeddings(path: str | Path) -> pd.DataFrame:
    """An ``embeddings.tsv`` (participant ids kept as text)."""
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str})


def coordinates(frame: pd.DataFrame, name: str = "salient") -> np.ndarray:
    """The ``{name}_0, {name}_1, …`` coordinates of an embeddings frame, as an array."""
    return frame.filter(regex=f"^{name}_\\d+$").to_numpy()


def subtype_labels(table: pd.DataFrame, truth_table: pd.DataFrame) -> np.ndarray:
    """The true subtype of each row of ``table`` (by ``participant_id``; NaN for controls)."""
    merged = table[["participant_id"]].merge(
        truth_table[["participant_id", "subtype"]], on="participant_id", how="left"
    )
    return merged["subtype"].to_numpy()


def roles(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(is_target, train) boolean masks of an embeddings frame (its ``group`` and ``split`` columns)."""
    return (frame["group"] == TARGET).to_numpy(), (frame["split"] == TRAIN).to_numpy()


def true_k(subtype: np.ndarray, is_target: np.ndarray) -> int:
    """Number of distinct true subtypes among the patients."""
    return int(pd.Series(subtype[is_target]).nunique())


def fit_subtyper(
    x: np.ndarray,
    is_target: np.ndarray,
    train: np.ndarray,
    k: int,
    *,
    standardise: str = "controls",
    directions: bool = True,
    seed: int = 0,
) -> SalientSubtyper:
    """A :class:`SalientSubtyper` fitted on the training patients' ``x``, with the training controls
    as reference when ``standardise="controls"`` (as ``neurosepclr subtype`` fits it)."""
    model = SalientSubtyper(k, standardise=standardise, directions=directions, random_state=seed)
    reference = x[~is_target & train] if standardise == "controls" else None
    return model.fit(x[is_target & train], reference=reference)


def held_out_subtype_ari(
    x: np.ndarray, subtype: np.ndarray, is_target: np.ndarray, train: np.ndarray, k: int, **options
) -> dict[str, float]:
    """ARI against the true ``subtype`` of :func:`fit_subtyper`'s clustering (``options``: its
    ``standardise``, ``directions`` and ``seed``): ``train`` (the fitted patients' labels),
    ``held_out`` (held-out patients assigned by ``predict``) and ``all`` (every patient by ``predict``)."""
    model = fit_subtyper(x, is_target, train, k, **options)
    held = is_target & ~train
    return {
        "train": float(adjusted_rand_score(subtype[is_target & train], model.labels_)),
        "held_out": float(adjusted_rand_score(subtype[held], model.predict(x[held]))),
        "all": float(adjusted_rand_score(subtype[is_target], model.predict(x[is_target]))),
    }


def cpca_at_each_alpha(embedded: Embedded, settings):
    """(α, the cohort in contrastive-PCA coordinates) for every α of ``settings.cpca_alphas``, each
    fitted on ``embedded``'s training patients against its training controls."""
    x_patients = flat_inputs(embedded.data.volumes, embedded.fit_rows)
    x_controls = flat_inputs(embedded.data.volumes, embedded.reference_rows)
    for alpha in settings.cpca_alphas:
        encoder = fit_cpca_encoder(x_patients, x_controls, alpha, settings.cpca_components)
        coordinates = encode(encoder, embedded.data.volumes)
        yield alpha, Embedded(embedded.data, embedded.split, embedded.common[:, :0], coordinates)
