"""The SepCLR objective (Louiset, Duchesnay, Grigis & Gori, ICLR 2024, Eq. 9) as one module.

``L = L_C + β_S·L_S + β_REG·L_REG + λ·L_JEM (+ β_ATTR·L_ATTR)`` with

* ``L_C   = align(c1, c2) + uniform(c1) + uniform(c2)`` — common InfoMax, both cohorts (or one of
  the meta-data-aware objectives of :mod:`neurosepclr.objectives.kernels`);
* ``L_S   = align(s1[y=1], s2[y=1]) + uniform(s1') + uniform(s2')`` — salient InfoMax with
  s'-uniformity;
* ``L_REG = ½ [mean_{y=0} ‖s1‖² + mean_{y=0} ‖s2‖²]`` — information-less background;
* ``L_JEM = ½ [k_jem(c1, s1') + k_jem(c2, s2')]`` — kernel joint entropy, drives I(c; s) → 0;
* ``L_ATTR`` — optional attribute-supervised salient alignment (SepCLR appendix);
* ``L_MATCH = ½ [MMD²(f_c(v1)[y=0], f_c(v1)[y=1]) + MMD²(f_c(v2)[y=0], f_c(v2)[y=1])]`` — optional
  (weight γ, ``loss.lambda_match``; not in the paper): the common representations *before the
  head* (what probes and users read) of controls and patients drawn from one distribution, the
  moment-matching penalty of Weinberger, Lin & Lee (AISTATS 2022), so the diagnosis stays out of
  the common space.

Degenerate batches: no target ⇒ align(s[y=1]) = 0 and s' = 0, so L_S = 0 and k-JEM sees only c;
no background ⇒ L_REG = 0 and s' = s; B = 2 ⇒ every term is defined (one pair). Values and
gradients stay finite in all three cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurosepclr.objectives.kernels import (
    attribute_alignment,
    conditional_align,
    conditional_uniform,
    decoupled_uniformity,
    rbf_kernel,
    y_aware_infonce,
)
from neurosepclr.objectives.terms import (
    align,
    background_energy,
    k_jem,
    mmd,
    nt_xent,
    null_background,
    uniform,
)


class SepCLRTerms(NamedTuple):
    """Total objective and its named, *unweighted* terms (log every one of them)."""

    total: Tensor
    common: Tensor
    salient: Tensor
    background: Tensor
    jem: Tensor
    attribute: Tensor
    salient_align: Tensor
    salient_uniform: Tensor
    common_match: Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats, for metrics logs."""
        return {name: float(value.detach()) for name, value in self._asdict().items()}


class CommonObjective(Protocol):
    """A common-space objective: (c1, c2) on the sphere, optional meta-data (B, M) → scalar."""

    def __call__(self, c1: Tensor, c2: Tensor, metadata: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class InfoMaxCommon:
    """SepCLR's L_C = align(c1, c2) + uniform(c1) + uniform(c2)."""

    tau: float = 0.5

    def __call__(self, c1: Tensor, c2: Tensor, metadata: Tensor | None = None) -> Tensor:
        return align(c1, c2, self.tau) + uniform(c1, self.tau) + uniform(c2, self.tau)


@dataclass(frozen=True)
class NTXentCommon:
    """SimCLR's NT-Xent on the common space (2B − 2 negatives per anchor); ignores meta-data."""

    tau: float = 0.5

    def __call__(self, c1: Tensor, c2: Tensor, metadata: Tensor | None = None) -> Tensor:
        return nt_xent(c1, c2, self.tau)


def _require_metadata(metadata: Tensor | None, name: str, batch: int) -> Tensor:
    if metadata is None:
        raise ValueError(f"{name} common objective needs meta-data (B, M); got none")
    if metadata.shape[0] != batch:
        raise ValueError(f"{name}: meta-data has {metadata.shape[0]} rows for a batch of {batch}")
    return metadata


@dataclass(frozen=True)
class YAwareCommon:
    """Symmetrised y-Aware InfoNCE: ½[ℓ(c1→c2) + ℓ(c2→c1)] with an RBF kernel on meta-data."""

    sigma: tuple[float, ...]
    tau: float = 0.1

    def __call__(self, c1: Tensor, c2: Tensor, metadata: Tensor | None = None) -> Tensor:
        weights = rbf_kernel(_require_metadata(metadata, "y_aware", c1.shape[0]), list(self.sigma))
        return 0.5 * (y_aware_infonce(c1, c2, weights, self.tau) + y_aware_infonce(c2, c1, weights, self.tau))


@dataclass(frozen=True)
class ConditionalCommon:
    """Conditional alignment + conditional uniformity of each view (kernel K on meta-data)."""

    sigma: tuple[float, ...]
    tau: float = 0.5

    def __call__(self, c1: Tensor, c2: Tensor, metadata: Tensor | None = None) -> Tensor:
        weights = rbf_kernel(_require_metadata(metadata, "conditional", c1.shape[0]), list(self.sigma))
        aligned = 0.5 * (
            conditional_align(c1, c2, weights, self.tau) + conditional_align(c2, c1, weights, self.tau)
        )
        return (
            aligned + conditional_uniform(c1, weights, self.tau) + conditional_uniform(c2, weights, self.tau)
        )


@dataclass(frozen=True)
class DecoupledCommon:
    """Decoupled uniformity, with a kernel prior on meta-data when bandwidths are given."""

    sigma: tuple[float, ...] = ()
    prior_lambda: float = 0.01

    def __call__(self, c1: Tensor, c2: Tensor, metadata: Tensor | None = None) -> Tensor:
        weights = None
        if self.sigma:
            weights = rbf_kernel(_require_metadata(metadata, "decoupled", c1.shape[0]), list(self.sigma))
        return decoupled_uniformity(c1, c2, weights, self.prior_lambda)


def _check_inputs(c1: Tensor, c2: Tensor, s1: Tensor, s2: Tensor, is_target: Tensor) -> Tensor:
    shapes = ", ".join(
        f"{n}={tuple(t.shape)}"
        for n, t in zip(("c1", "c2", "s1", "s2", "is_target"), (c1, c2, s1, s2, is_target), strict=True)
    )
    batch = c1.shape[0]
    if (
        c1.ndim != 2
        or s1.ndim != 2
        or c1.shape != c2.shape
        or s1.shape != s2.shape
        or s1.shape[0] != batch
        or is_target.shape != (batch,)
    ):
        raise ValueError(f"SepCLRLoss: expected c (B, Dc) ×2, s (B, Ds) ×2 and is_target (B,); got {shapes}")
    if is_target.dtype != torch.bool:
        if torch.is_floating_point(is_target) or not ((is_target == 0) | (is_target == 1)).all():
            raise ValueError(
                f"SepCLRLoss: is_target must be bool or 0/1 integers, got dtype {is_target.dtype}"
            )
        is_target = is_target.bool()
    return is_target


class SepCLRLoss(nn.Module):
    """SepCLR objective; returns :class:`SepCLRTerms` with ``total`` and every named term.

    Args:
        beta_s: weight β_S of the salient InfoMax term.
        beta_reg: weight β_REG of the information-less background term.
        lambda_jem: weight λ of the k-JEM term.
        tau: temperature τ of align, uniform and k-JEM.
        common: common-space objective; ``None`` is SepCLR's InfoMax L_C at temperature ``tau``.
        beta_attr: weight of the attribute-supervised salient alignment (0: off).
        attribute_sigma2: σ² of its attribute kernel.
        lambda_match: weight γ of the common-space matching term L_MATCH (0: off).

    Call with ``(c1, c2, s1, s2, is_target)``: raw common-head outputs of the two views (B, Dc)
    (L2-normalised here), salient-head outputs (B, Ds) and a (B,) bool target mask; optionally
    ``metadata`` (B, M) for a meta-data-aware common objective and ``attributes`` (B, K) for
    ``beta_attr > 0`` and ``common_features`` (the two views' common representations before the
    head, (B, d_c) each) for ``lambda_match > 0``.
    """

    def __init__(
        self,
        beta_s: float = 1.0,
        beta_reg: float = 10.0,
        lambda_jem: float = 10.0,
        tau: float = 0.5,
        common: CommonObjective | None = None,
        beta_attr: float = 0.0,
        attribute_sigma2: float = 0.025,
        lambda_match: float = 0.0,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"SepCLRLoss: tau must be > 0, got {tau}")
        self.beta_s = beta_s
        self.beta_reg = beta_reg
        self.lambda_jem = lambda_jem
        self.tau = tau
        self.common = common if common is not None else InfoMaxCommon(tau)
        self.beta_attr = beta_attr
        self.attribute_sigma2 = attribute_sigma2
        self.lambda_match = lambda_match

    def forward(
        self,
        c1: Tensor,
        c2: Tensor,
        s1: Tensor,
        s2: Tensor,
        is_target: Tensor,
        metadata: Tensor | None = None,
        attributes: Tensor | None = None,
        common_features: tuple[Tensor, Tensor] | None = None,
    ) -> SepCLRTerms:
        is_target = _check_inputs(c1, c2, s1, s2, is_target)
        tau = self.tau
        c1 = F.normalize(c1, dim=1)
        c2 = F.normalize(c2, dim=1)
        s1_null = null_background(s1, is_target)
        s2_null = null_background(s2, is_target)

        common = self.common(c1, c2, metadata)
        salient_align = align(s1[is_target], s2[is_target], tau)
        salient_uniform = uniform(s1_null, tau) + uniform(s2_null, tau)
        salient = salient_align + salient_uniform
        background = 0.5 * (background_energy(s1, is_target) + background_energy(s2, is_target))
        jem = 0.5 * (k_jem(c1, s1_null, tau) + k_jem(c2, s2_null, tau))
        if self.beta_attr > 0:
            if attributes is None:
                raise ValueError("SepCLRLoss: beta_attr > 0 needs target attributes (B, K)")
            attribute = attribute_alignment(s1, s2, attributes, is_target, self.attribute_sigma2)
        else:
            attribute = jem.new_zeros(())
        if self.lambda_match > 0:
            if common_features is None:
                raise ValueError("SepCLRLoss: lambda_match > 0 needs the common features of both views")
            match = 0.5 * sum(mmd(f[~is_target], f[is_target]) for f in common_features)
        else:
            match = jem.new_zeros(())

        total = (
            common
            + self.beta_s * salient
            + self.beta_reg * background
            + self.lambda_jem * jem
            + self.beta_attr * attribute
            + self.lambda_match * match
        )
        return SepCLRTerms(
            total, common, salient, background, jem, attribute, salient_align, salient_uniform, match
        )

    def extra_repr(self) -> str:
        return (
            f"beta_s={self.beta_s}, beta_reg={self.beta_reg}, lambda_jem={self.lambda_jem}, "
            f"tau={self.tau}, common={self.common!r}, beta_attr={self.beta_attr}, "
            f"lambda_match={self.lambda_match}"
        )


def loss_from_config(cfg) -> SepCLRLoss:
    """Build :class:`SepCLRLoss` from a :class:`neurosepclr.config.LossConfig`."""
    sigma = tuple(cfg.metadata_sigma)
    common: CommonObjective
    if cfg.common == "infomax":
        common = InfoMaxCommon(cfg.tau)
    elif cfg.common == "nt_xent":
        common = NTXentCommon(cfg.tau)
    elif cfg.common == "y_aware":
        common = YAwareCommon(sigma, cfg.y_aware_tau)
    elif cfg.common == "conditional":
        common = ConditionalCommon(sigma, cfg.tau)
    elif cfg.common == "decoupled":
        common = DecoupledCommon(sigma, cfg.decoupled_prior_lambda)
    else:  # pragma: no cover - the config validator restricts the choices
        raise ValueError(f"unknown common objective {cfg.common!r}")
    return SepCLRLoss(
        beta_s=cfg.beta_s,
        beta_reg=cfg.beta_reg,
        lambda_jem=cfg.lambda_jem,
        tau=cfg.tau,
        common=common,
        beta_attr=cfg.beta_attr if cfg.attributes else 0.0,
        attribute_sigma2=cfg.attribute_sigma2,
        lambda_match=cfg.lambda_match,
    )
