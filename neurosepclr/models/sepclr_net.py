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


class MemberEncoders(nn.Module):
    """Several independently initialised encoders on the same input; representations concatenated."""

    def __init__(self, encoders: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(encoders)

    def forward(self, x: torch.Tensor, member_views: bool = False) -> torch.Tensor:
        """``member_views``: ``x`` stacks one block of rows per member (member m reads block m)."""
        blocks = x.chunk(len(self.members)) if member_views else [x] * len(self.members)
        return torch.cat([encoder(block) for encoder, block in zip(self.members, blocks, strict=True)], dim=1)


class MemberHeads(nn.Module):
    """One projection head per member, each reading only its member's slice of the representation."""

    def __init__(self, dim: int, hidden: int, n_members: int) -> None:
        super().__init__()
        self.dim = dim
        self.members = nn.ModuleList(ProjectionHead(dim, hidden) for _ in range(n_members))

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        chunks = rep.split(self.dim, dim=1)
        return torch.cat([head(chunk) for head, chunk in zip(self.members, chunks, strict=True)], dim=1)


class SepCLROutput(NamedTuple):
    common_rep: torch.Tensor
    salient_rep: torch.Tensor
    common_proj: torch.Tensor
    salient_proj: torch.Tensor


class SepCLRNet(nn.Module):
    """Common and salient encoders (no weight sharing) with their projection heads.

    With ``members`` > 1 the encoders are :class:`MemberEncoders` of that many members, each with its
    own head: the representations (and head outputs) are the members' concatenated, and the loss is
    applied to each member's slice (:func:`neurosepclr.objectives.member_mean`).
    """

    def __init__(
        self,
        common_encoder: nn.Module,
        salient_encoder: nn.Module,
        common_dim: int,
        salient_dim: int,
        head_hidden: int = 128,
        n_prototypes: int = 0,
        members: int = 1,
    ) -> None:
        super().__init__()
        self.members = members
        self.common_encoder = common_encoder
        self.salient_encoder = salient_encoder
        if members == 1:
            self.common_head = ProjectionHead(common_dim, head_hidden)
            self.salient_head = ProjectionHead(salient_dim, head_hidden)
        else:
            self.common_head = MemberHeads(common_dim, head_hidden, members)
            self.salient_head = MemberHeads(salient_dim, head_hidden, members)
        # learnable salient prototypes of the optional swapped-assignment term (loss.salient_prototypes)
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, salient_dim)) if n_prototypes else None

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations (c, s) before the heads, shapes (B, Dc) and (B, Ds)."""
        return self.common_encoder(x), self.salient_encoder(x)

    def forward_head(
        self, common_rep: torch.Tensor, salient_rep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.common_head(common_rep), self.salient_head(salient_rep)

    def forward(self, x: torch.Tensor, member_views: bool = False) -> SepCLROutput:
        """Training forward; with several members and ``member_views``, ``x`` holds one block of views
        per member (each member trained on its own random views of the same subjects)."""
        if member_views and self.members > 1:
            common_rep = self.common_encoder(x, member_views=True)
            salient_rep = self.salient_encoder(x, member_views=True)
        else:
            common_rep, salient_rep = self.forward_features(x)
        common_proj, salient_proj = self.forward_head(common_rep, salient_rep)
        return SepCLROutput(common_rep, salient_rep, common_proj, salient_proj)


def build_model(cfg, n_prototypes: int = 0) -> SepCLRNet:
    """SepCLRNet from a :class:`neurosepclr.config.ModelConfig` (and ``loss.salient_prototypes``)."""
    if cfg.members > 1 and n_prototypes:
        raise ValueError("salient prototypes are not supported with several members")

    def encoder(dim: int) -> nn.Module:
        if cfg.members == 1:
            return build_encoder(cfg.encoder, dim, cfg.widths, cfg.pool_cells, cfg.downsample)
        return MemberEncoders(
            [
                build_encoder(cfg.encoder, dim, cfg.widths, cfg.pool_cells, cfg.downsample)
                for _ in range(cfg.members)
            ]
        )

    common, salient = encoder(cfg.common_dim), encoder(cfg.salient_dim)
    return SepCLRNet(
        common, salient, cfg.common_dim, cfg.salient_dim, cfg.head_hidden, n_prototypes, cfg.members
    )
