"""What ``subtype`` clusters: SepCLR's salient space, or contrastive PCA of the same inputs.

Contrastive PCA (Abid et al., Nat. Commun. 2018; :class:`~neurosepclr.analysis.baselines.ContrastivePCA`)
is the linear baseline SepCLR is judged against (docs/method.md). Inside the product it is a second
representation of the run's cohort: the top eigenvectors of C_patients − α·C_controls of the
training subjects' inputs, exactly as the encoders see them (pooled, z-scored against the training
controls with ``train.input_norm: controls``). α is chosen without labels, by the score K is chosen
with (split-half stability and silhouette above structureless data,
:func:`~neurosepclr.clustering.stability_table`).

The fitted projection is a :class:`LinearEncoder`: a torch module with the encoders'
``forward_features`` interface, so the saliency maps attribute it as they attribute SepCLR (for a
linear map integrated gradients are exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from neurosepclr.analysis.baselines import ContrastivePCA
from neurosepclr.clustering import stability_table
from neurosepclr.training.data import CohortTensors

SHORT_NAMES = {"sepclr": "SepCLR", "cpca": "contrastive PCA"}  # the report's wording
LONG_NAMES = {"sepclr": "SepCLR salient space", "cpca": "contrastive PCA"}  # the TSVs' wording


@dataclass
class Embedded:
    """A run's cohort in its salient and common spaces, with the training split and reference rows."""

    data: CohortTensors
    split: np.ndarray
    common: np.ndarray
    salient: np.ndarray

    @property
    def is_target(self) -> np.ndarray:
        return self.data.is_target.numpy()

    @property
    def fit_rows(self) -> np.ndarray:
        """The training patients: the subtypes are fitted on them alone."""
        return self.is_target & (self.split == "train")

    @property
    def reference_rows(self) -> np.ndarray:
        """The training controls: the reference the salient coordinates are whitened against."""
        return ~self.is_target & (self.split == "train")


class LinearEncoder(torch.nn.Module):
    """``x ↦ x W ᵀ − b`` on the flattened input: a fitted linear representation (no common space)."""

    def __init__(self, weights: np.ndarray, offset: np.ndarray):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coordinates = x.reshape(len(x), -1).to(self.weights.dtype) @ self.weights.T - self.offset
        return coordinates[:, :0], coordinates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


def flat_inputs(volumes: torch.Tensor, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, C, D, H, W) volumes (optionally only ``rows``) → (N, C·D·H·W) float32."""
    picked = volumes if rows is None else volumes[torch.from_numpy(np.flatnonzero(rows))]
    return picked.reshape(len(picked), -1).numpy().astype(np.float32, copy=False)


def fit_cpca_encoder(
    x_patients: np.ndarray,
    x_controls: np.ndarray,
    alpha: float,
    n_components: int,
    n_joint: int = 60,
    seed: int = 0,
) -> LinearEncoder:
    """Contrastive PCA of patients (target) against controls (background), folded into one linear map:
    coordinates = (x − μ) Pᵀ Vᵀ with P the joint PCA and V the contrastive directions."""
    x = np.concatenate([x_patients, x_controls])
    is_patient = np.r_[np.ones(len(x_patients), bool), np.zeros(len(x_controls), bool)]
    model = ContrastivePCA(n_components, alpha, n_joint, random_state=seed).fit(x, is_patient)
    weights = model.components_ @ model.pca_.components_
    return LinearEncoder(weights, weights @ model.pca_.mean_)


def encode(encoder: torch.nn.Module, volumes: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Salient coordinates of every volume through ``encoder.forward_features``, batch by batch."""
    out = []
    with torch.no_grad():
        for start in range(0, len(volumes), batch_size):
            out.append(encoder.forward_features(volumes[start : start + batch_size])[1].double().numpy())
    return np.concatenate(out)


def choose_alpha(
    volumes: torch.Tensor,
    patients: np.ndarray,
    controls: np.ndarray,
    alphas: list[float],
    k_values: list[int],
    n_components: int,
    *,
    method: str = "kmeans",
    standardise: str = "controls",
    directions: bool = True,
    n_resamples: int = 20,
    null_draws: int = 5,
    seed: int = 0,
) -> tuple[LinearEncoder, pd.DataFrame]:
    """Contrastive PCA at each α, scored without labels on the training ``patients`` (against the
    training ``controls``) by the best (stability + silhouette, above noise) over ``k_values``.
    Returns the encoder of the best-scoring α and one row per (α, K)."""
    x_patients, x_controls = flat_inputs(volumes, patients), flat_inputs(volumes, controls)
    rows, encoders = [], {}
    for alpha in alphas:
        encoder = fit_cpca_encoder(x_patients, x_controls, alpha, n_components, seed=seed)
        encoders[alpha] = encoder
        table = stability_table(
            encode(encoder, torch.from_numpy(x_patients)),
            k_values,
            method=method,
            n_resamples=n_resamples,
            random_state=seed,
            standardise=standardise,
            reference=encode(encoder, torch.from_numpy(x_controls)),
            directions=directions,
            null_draws=null_draws,
        )
        rows.append(table.assign(alpha=alpha))
    scores = pd.concat(rows, ignore_index=True)
    best = scores.loc[scores["score"].idxmax()]
    scores["chosen"] = scores["alpha"] == best["alpha"]
    columns = ["alpha", "k", "stability_ari_mean", "stability_ari_sd", "silhouette", "score", "chosen"]
    return encoders[float(best["alpha"])], scores[[c for c in columns if c in scores]]


def cpca_space(
    embedded: Embedded, settings, k_values: list[int], seed: int = 0
) -> tuple[Embedded, LinearEncoder, pd.DataFrame]:
    """The cohort in contrastive-PCA coordinates (α chosen by :func:`choose_alpha` on the training
    patients against the training controls), with its encoder and the α table."""
    encoder, alphas = choose_alpha(
        embedded.data.volumes,
        embedded.fit_rows,
        embedded.reference_rows,
        list(settings.cpca_alphas),
        k_values,
        settings.cpca_components,
        method=settings.method,
        standardise=settings.standardise,
        directions=settings.cluster_directions(),
        n_resamples=settings.n_resamples,
        null_draws=settings.null_draws,
        seed=seed,
    )
    coordinates = encode(encoder, embedded.data.volumes)
    space = Embedded(embedded.data, embedded.split, np.zeros((len(coordinates), 0)), coordinates)
    return space, encoder, alphas


def save_encoder(path, encoder: LinearEncoder) -> None:
    """The linear encoder as ``.npz`` arrays (no pickle)."""
    with open(path, "wb") as handle:
        np.savez_compressed(handle, weights=encoder.weights.numpy(), offset=encoder.offset.numpy())


def load_encoder(path) -> LinearEncoder:
    with np.load(path, allow_pickle=False) as arrays:
        return LinearEncoder(arrays["weights"], arrays["offset"])
