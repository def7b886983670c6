"""Meta-data-aware contrastive terms from the same group, as options of the objective.

* y-Aware InfoNCE — Dufumier et al., "Contrastive learning with continuous proxy meta-data for 3D
  MRI classification", MICCAI 2021, Eq. 3.
* Conditional alignment and uniformity — Dufumier et al., "Conditional alignment and uniformity
  for contrastive learning with continuous proxy labels", arXiv 2111.05643, §3.
* Decoupled uniformity with a kernel prior — Dufumier et al., "Integrating prior knowledge in
  contrastive learning with kernel", ICML 2023, §3–4.
* Attribute-supervised salient alignment — Louiset et al., ICLR 2024, appendix (sup_align).

In neuroimaging they route variability shared by patients and controls (age, sex, site) into the
common space on purpose. Meta-data arrive as a float tensor (B, M): continuous columns in their
units, categorical columns as integer codes with a tiny bandwidth (which makes the RBF an equality
indicator).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from neurosepclr.objectives.terms import pairwise_sq_dists, zero_attached


def rbf_kernel(metadata: Tensor, sigma: Tensor | list[float]) -> Tensor:
    """Product RBF kernel ``K_ij = exp(−Σ_m (y_im − y_jm)² / (2σ_m²))`` on meta-data (B, M).

    Returns (B, B) with K_ii = 1. ``sigma`` has one bandwidth per column (age: 5 years in
    Dufumier et al. 2021).
    """
    if metadata.ndim == 1:
        metadata = metadata[:, None]
    sigma = torch.as_tensor(sigma, dtype=metadata.dtype, device=metadata.device).reshape(-1)
    if sigma.numel() != metadata.shape[1]:
        raise ValueError(f"rbf_kernel: {metadata.shape[1]} meta-data columns but {sigma.numel()} bandwidths")
    if not torch.isfinite(metadata).all():
        raise ValueError("rbf_kernel: meta-data contain NaN or Inf; impute or drop those subjects first")
    scaled = metadata / sigma
    return torch.exp(-0.5 * pairwise_sq_dists(scaled))


def y_aware_infonce(z1: Tensor, z2: Tensor, weights: Tensor, tau: float = 0.1) -> Tensor:
    """y-Aware InfoNCE (Dufumier et al. 2021, Eq. 3), one direction (view 1 → view 2).

    ``ℓ = −(1/n) Σ_i Σ_j [W_ij / Σ_k W_ik] log softmax_j(sim(z1_i, z2_j)/τ)`` with cosine similarity;
    ``weights`` is the (B, B) meta-data kernel W. W = I gives the usual InfoNCE.
    """
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2, dim=1)
    log_prob = F.log_softmax(z1 @ z2.transpose(0, 1) / tau, dim=1)
    row_weights = weights / weights.sum(dim=1, keepdim=True)
    return -(row_weights * log_prob).sum(dim=1).mean()


def conditional_align(z1: Tensor, z2: Tensor, weights: Tensor, tau: float = 0.5) -> Tensor:
    """Kernel-conditioned alignment ``(1/B) Σ_i Σ_j [K_ij / Σ_k K_ik] ‖z1_i − z2_j‖² / (2τ)``.

    Pulls together the two views of a subject (K_ii = 1) and, in proportion to the meta-data kernel,
    the views of subjects with similar meta-data (Dufumier et al., arXiv 2111.05643, §3.1).
    K = I reduces it to :func:`~neurosepclr.objectives.terms.align`.
    """
    cross = z1.pow(2).sum(1)[:, None] + z2.pow(2).sum(1)[None, :] - 2.0 * z1 @ z2.transpose(0, 1)
    row_weights = weights / weights.sum(dim=1, keepdim=True)
    return (row_weights * cross.clamp_min(0.0)).sum(dim=1).mean() / (2.0 * tau)


def conditional_uniform(z: Tensor, weights: Tensor, tau: float = 0.5) -> Tensor:
    """Kernel-conditioned uniformity ``log [Σ_{i<j} (1 − K_ij) e^{−‖z_i − z_j‖²/(2τ)} / Σ_{i<j} (1 − K_ij)]``.

    Repels only subjects whose meta-data differ (Dufumier et al., arXiv 2111.05643, §3.2). K = 0 off
    the diagonal reduces it to :func:`~neurosepclr.objectives.terms.uniform`. A batch in which every
    pair has the same meta-data (no pair to repel) gives 0.
    """
    n = z.shape[0]
    if n < 2:
        return zero_attached(z)
    rows, cols = torch.triu_indices(n, n, offset=1, device=z.device)
    repel = (1.0 - weights[rows, cols]).clamp_min(0.0)
    total = repel.sum()
    if float(total) <= 1e-12:
        return zero_attached(z)
    neg_scaled = -pairwise_sq_dists(z)[rows, cols] / (2.0 * tau)
    return torch.logsumexp(neg_scaled + torch.log(repel), dim=0) - torch.log(total)


def decoupled_uniformity(
    z1: Tensor, z2: Tensor, weights: Tensor | None = None, prior_lambda: float = 0.01
) -> Tensor:
    """Decoupled uniformity ``log mean_{i<j} exp(−2‖μ_i − μ_j‖²)`` (Dufumier et al., ICML 2023, Eq. 4).

    The views are L2-normalised and averaged into centroids z̄_i; with a kernel prior ``weights``
    (B, B) the centroids are smoothed as μ = (K + λI)⁻¹ K z̄ (Eq. 7). Alignment is implicit: a
    centroid is longest when its views agree. B < 2 gives 0.
    """
    centroids = 0.5 * (F.normalize(z1, dim=1) + F.normalize(z2, dim=1))
    n = centroids.shape[0]
    if n < 2:
        return zero_attached(z1, z2)
    if weights is not None:
        eye = torch.eye(n, dtype=weights.dtype, device=weights.device)
        centroids = torch.linalg.solve(weights + prior_lambda * eye, weights @ centroids)
    rows, cols = torch.triu_indices(n, n, offset=1, device=z1.device)
    neg_scaled = -2.0 * pairwise_sq_dists(centroids)[rows, cols]
    return torch.logsumexp(neg_scaled, dim=0) - math.log(rows.numel())


def sup_align(x: Tensor, attribute: Tensor, sigma2: float = 0.025) -> Tensor:
    """Attribute-supervised alignment ``mean_{i<j} exp(−(a_i − a_j)²/(2σ²)) · (x_i − x_j)²``.

    Ties one salient coordinate ``x`` (N,) to one attribute ``a`` (N,), scaled to [0, 1]
    (SepCLR appendix; σ² = 0.025, a tiny σ² gives the discrete-attribute version). N < 2 gives 0.
    """
    n = x.shape[0]
    if n < 2:
        return zero_attached(x)
    rows, cols = torch.triu_indices(n, n, offset=1, device=x.device)
    kernel = torch.exp(-(attribute[rows] - attribute[cols]).pow(2) / (2.0 * sigma2))
    return (kernel * (x[rows] - x[cols]).pow(2)).mean()


def attribute_alignment(
    s1: Tensor, s2: Tensor, attributes: Tensor, is_target: Tensor, sigma2: float = 0.025
) -> Tensor:
    """Σ_k ½[sup_align(s1[y=1, k], a_k) + sup_align(s2[y=1, k], a_k)] over attributes (B, K).

    Salient dimension k is tied to attribute k, on target rows only. Target attributes must be
    finite (impute or drop subjects before training).
    """
    if attributes.ndim == 1:
        attributes = attributes[:, None]
    if attributes.shape[1] > s1.shape[1]:
        raise ValueError(
            f"attribute_alignment: {attributes.shape[1]} attributes but only {s1.shape[1]} salient dimensions"
        )
    target_attributes = attributes[is_target]
    if not torch.isfinite(target_attributes).all():
        raise ValueError("attribute_alignment: target attributes contain NaN or Inf")
    total = zero_attached(s1, s2)
    for k in range(attributes.shape[1]):
        a_k = target_attributes[:, k]
        total = total + 0.5 * (
            sup_align(s1[is_target, k], a_k, sigma2) + sup_align(s2[is_target, k], a_k, sigma2)
        )
    return total
