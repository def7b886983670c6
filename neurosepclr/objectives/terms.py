"""Primitive terms of the SepCLR objective, as small pure tensor functions.

Notation of Louiset, Duchesnay, Grigis & Gori, "Separating common from salient patterns with
contrastive representation learning", ICLR 2024 (arXiv 2402.11928), §4, and of
``docs/method.md``. ``B`` is the batch size, ``D`` an embedding dimension, τ the temperature.

Every function is defined (finite value, finite gradient) on degenerate batches: an empty selection
or a batch with fewer than two rows yields an exact zero that stays attached to the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def zero_attached(*tensors: Tensor) -> Tensor:
    """A scalar 0 connected to the inputs' graphs (so ``backward`` still works)."""
    return sum((t.sum() * 0.0 for t in tensors), start=tensors[0].new_zeros(()))


def pairwise_sq_dists(z: Tensor) -> Tensor:
    """Squared Euclidean distances ‖z_i − z_j‖², shape (B, B), for ``z`` of shape (B, D).

    Computed from the Gram matrix and clamped at 0, so the gradient is finite also for identical
    rows (``torch.cdist``/``pdist`` give NaN gradients at zero distance, and s' has many such rows).
    """
    sq_norms = z.pow(2).sum(dim=1)
    gram = z @ z.transpose(0, 1)
    return (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min(0.0)


def align(a: Tensor, b: Tensor, tau: float = 0.5) -> Tensor:
    """Alignment ``mean_i ‖a_i − b_i‖² / (2τ)`` between two views, ``a`` and ``b`` of shape (N, D).

    method.md, term ``align``; the alignment loss of Wang & Isola (2020) with exponent 2, scaled by
    1/(2τ). N = 0 (e.g. no target in the batch for L_S) gives 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"align: views must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        return zero_attached(a, b)
    return (a - b).pow(2).sum(dim=1).mean() / (2.0 * tau)


def uniform(z: Tensor, tau: float = 0.5) -> Tensor:
    """Uniformity ``log mean_{i<j} exp(−‖z_i − z_j‖² / (2τ))`` of ``z`` (B, D).

    method.md, term ``uniform``; Wang & Isola (2020) with t = 1/(2τ). Minimising it spreads the rows
    apart. Fewer than two rows (no pair) gives 0.
    """
    n = z.shape[0]
    if n < 2:
        return zero_attached(z)
    rows, cols = torch.triu_indices(n, n, offset=1, device=z.device)
    neg_scaled = -pairwise_sq_dists(z)[rows, cols] / (2.0 * tau)
    return torch.logsumexp(neg_scaled, dim=0) - math.log(rows.numel())


def nt_xent(z1: Tensor, z2: Tensor, tau: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent (Chen et al., ICML 2020, Eq. 1) of two views (B, D), averaged over all 2B anchors.

    Cosine similarities over τ; each anchor's positive is its other view, its negatives the other
    2B − 2 embeddings of both views. The single-space baseline's objective, and a common-space
    choice (``loss.common: nt_xent``). B = 1 has no negative: the loss is then 0.
    """
    if z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent: views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    batch = z1.shape[0]
    if batch < 2:
        return zero_attached(z1, z2)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.transpose(0, 1) / tau).fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return F.cross_entropy(logits, positives)


def null_background(s: Tensor, is_target: Tensor) -> Tensor:
    """s': the salient embeddings with every background row replaced by the null vector 0.

    ``s`` is (B, Ds), ``is_target`` a (B,) bool mask. The replaced rows are constants: no gradient
    reaches the encoder through them (SepCLR, §4.2, "s'-uniformity").
    """
    return torch.where(is_target[:, None], s, torch.zeros_like(s))


def background_energy(s: Tensor, is_target: Tensor) -> Tensor:
    """Information-less background term ``mean_{i: y_i = 0} ‖s_i‖²`` for one view (B, Ds).

    Forces the salient encoder to map controls to the null vector. No background row gives 0.
    """
    background = s[~is_target]
    if background.shape[0] == 0:
        return zero_attached(s)
    return background.pow(2).sum(dim=1).mean()


def k_jem(c: Tensor, s: Tensor, tau: float = 0.5) -> Tensor:
    """Kernel joint-entropy estimator (k-JEM) of (c, s), up to sign: an estimate of −H(c, s).

    ``mean_i log[(1/B) Σ_j exp(−‖c_i − c_j‖²/(2τ)) · exp(−‖s_i − s_j‖²/(2τ))]`` with j = i
    included, ``c`` (B, Dc) on the sphere and ``s`` (B, Ds) the salient head output with the null
    background (s'). Minimising it maximises the joint entropy, which, with the marginal entropies
    maximised by the uniformity terms, drives I(c; s) toward 0 (SepCLR, §4.3). Always finite: the
    j = i term bounds each log from below by log(1/B).
    """
    if c.shape[0] != s.shape[0]:
        raise ValueError(
            f"k_jem: c and s need the same batch size, got {tuple(c.shape)} and {tuple(s.shape)}"
        )
    n = c.shape[0]
    log_kernel = -(pairwise_sq_dists(c) + pairwise_sq_dists(s)) / (2.0 * tau)
    return (torch.logsumexp(log_kernel, dim=1) - math.log(n)).mean()


def mmd(x: Tensor, y: Tensor, scales: tuple[float, ...] = (0.5, 1.0, 2.0)) -> Tensor:
    """Squared maximum mean discrepancy between samples ``x`` (N, D) and ``y`` (M, D).

    The biased (V-statistic) estimate ``mean k(x, x') + mean k(y, y') − 2 mean k(x, y)`` of Gretton
    et al. (JMLR 2012, Eq. 5) with a sum of Gaussian kernels ``exp(−‖a − b‖² / (s·m))``, where m is
    the median squared distance of the pooled sample (a constant: no gradient flows through the
    bandwidth) and s runs over ``scales``. Zero for identical samples, ≥ 0 always. Used to match the
    common representations of controls and patients (the moment-matching penalty of Weinberger,
    Lin & Lee, "Moment matching deep contrastive latent variable models", AISTATS 2022). An empty
    group gives 0.
    """
    if x.shape[0] == 0 or y.shape[0] == 0:
        return zero_attached(x, y)
    n = x.shape[0]
    sq = pairwise_sq_dists(torch.cat([x, y]))
    off_diagonal = sq[~torch.eye(sq.shape[0], dtype=torch.bool, device=sq.device)]
    median = off_diagonal.detach().median().clamp_min(1e-8)  # ≥ 2 rows, so never empty
    kernel = sum(torch.exp(-sq / (scale * median)) for scale in scales)
    return (kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()).clamp_min(0.0)
