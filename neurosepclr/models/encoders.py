"""3D encoders mapping a one-channel volume (B, 1, D, H, W) to a representation (B, d).

``light_cnn`` is a small 4-block CNN that trains in minutes on CPU; the others are MONAI networks
built with ``spatial_dims=3`` and one input channel, randomly initialised (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class LightCNN3d(nn.Module):
    """Blocks of conv3×3×3 → BatchNorm → ReLU → 2× max-pooling, then
    average pooling to a grid of ``pool_cells``³ cells, flattened, and a linear layer to ``out_dim``.

    ``pool_cells=1`` is the usual global average pooling, which is blind to *where* a feature
    fires; ``pool_cells=2`` keeps one feature vector per octant of the field of view, so that
    patterns that differ only by location (atrophy of one lobe or another) stay apart.
    """

    def __init__(
        self,
        out_dim: int,
        widths: Sequence[int] = (16, 32, 64, 128),
        in_channels: int = 1,
        pool_cells: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [
                nn.Conv3d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(2, ceil_mode=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(pool_cells)
        self.fc = nn.Linear(channels * pool_cells**3, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _monai_resnet(layers: list[int]) -> Callable[[int, int], nn.Module]:
    def build(out_dim: int, in_channels: int = 1) -> nn.Module:
        from monai.networks.nets import ResNet

        return ResNet(
            "basic",
            layers,
            [64, 128, 256, 512],
            spatial_dims=3,
            n_input_channels=in_channels,
            num_classes=out_dim,
            conv1_t_size=7,
            conv1_t_stride=2,
        )

    return build


def _monai_densenet(out_dim: int, in_channels: int = 1) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=out_dim)


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "light_cnn": lambda out_dim, widths=(16, 32, 64, 128), pool_cells=1, in_channels=1: LightCNN3d(
        out_dim, widths, in_channels=in_channels, pool_cells=pool_cells
    ),
    "resnet10": lambda out_dim, in_channels=1, **_: _monai_resnet([1, 1, 1, 1])(out_dim, in_channels),
    "resnet18": lambda out_dim, in_channels=1, **_: _monai_resnet([2, 2, 2, 2])(out_dim, in_channels),
    "densenet121": lambda out_dim, in_channels=1, **_: _monai_densenet(out_dim, in_channels),
}


def build_encoder(
    name: str,
    out_dim: int,
    widths: Sequence[int] = (16, 32, 64, 128),
    pool_cells: int = 1,
    in_channels: int = 1,
) -> nn.Module:
    """A fresh encoder by name (see :data:`ENCODERS`) reading ``in_channels`` channels; ``widths`` and
    ``pool_cells`` are light_cnn's."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r} (choose from {', '.join(ENCODERS)})")
    if pool_cells != 1 and name != "light_cnn":
        raise ValueError(f"model.pool_cells={pool_cells} is only available for light_cnn, not {name!r}")
    return ENCODERS[name](out_dim, widths=tuple(widths), pool_cells=pool_cells, in_channels=in_channels)
