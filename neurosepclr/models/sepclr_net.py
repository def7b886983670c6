"""Two independent encoders (common f_c, salient f_s), each with its projection head g (method.md).

Probes and clustering read the representations *before* the heads (:meth:`SepCLRNet.forward_features`);
the losses read the head outputs (:meth:`SepCLRNet.forward_head`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from neurosepclr.models.encoders import build_encoder


class ProjectionHead(nn.Sequential):
    """g = Linear(d, hidden) → BatchNorm1d → ReLU → Linear(hidden, d) (SepCLR, §5)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )


class SepCLROutput(NamedTuple):
    common_rep: torch.Tensor
    salient_rep: torch.Tensor
    common_proj: torch.Tensor
    salient_proj: torch.Tensor


class SepCLRNet(nn.Module):
    """Common and salient encoders (no weight sharing) with their projection heads."""

    def __init__(
        self,
        common_encoder: nn.Module,
        salient_encoder: nn.Module,
        common_dim: int,
        salient_dim: int,
        head_hidden: int = 128,
    ) -> None:
        super().__init__()
        self.common_encoder = common_encoder
        self.salient_encoder = salient_encoder
        self.common_head = ProjectionHead(common_dim, head_hidden)
        self.salient_head = ProjectionHead(salient_dim, head_hidden)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations (c, s) before the heads, shapes (B, Dc) and (B, Ds)."""
        return self.common_encoder(x), self.salient_encoder(x)

    def forward_head(
        self, common_rep: torch.Tensor, salient_rep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.common_head(common_rep), self.salient_head(salient_rep)

    def forward(self, x: torch.Tensor) -> SepCLROutput:
        common_rep, salient_rep = self.forward_features(x)
        common_proj, salient_proj = self.forward_head(common_rep, salient_rep)
        return SepCLROutput(common_rep, salient_rep, common_proj, salient_proj)


def build_model(cfg, in_channels: int = 1) -> SepCLRNet:
    """SepCLRNet from a :class:`neurosepclr.config.ModelConfig`; ``in_channels``: one per input
    feature (``data.features``)."""
    common = build_encoder(cfg.encoder, cfg.common_dim, cfg.widths, cfg.pool_cells, in_channels)
    salient = build_encoder(cfg.encoder, cfg.salient_dim, cfg.widths, cfg.pool_cells, in_channels)
    return SepCLRNet(common, salient, cfg.common_dim, cfg.salient_dim, cfg.head_hidden)
