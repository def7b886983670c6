"""Random views, batched on the device, every draw a pure function of a ``torch.Generator``.

Per sample: a small 3D affine (rotation, scaling, translation), an optional left-right flip, a
smooth multiplicative bias field, intensity gain and offset (on intensity channels only), and
Gaussian noise.
:func:`draw_view_params` records the parameters, so a view is reproducible from them
(:func:`apply_view`) and from the generator's seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def draw_view_params(n: int, cfg, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Parameters of ``n`` views (all on CPU)."""

    def uniform(*shape, bound):
        return (torch.rand(*shape, generator=generator) * 2 - 1) * bound

    params = {
        "rotation": uniform(n, 3, bound=math.radians(cfg.rotation_deg)),
        "scale": 1.0 + uniform(n, 3, bound=cfg.scale),
        "translation": uniform(n, 3, bound=1.0),  # in units of translation_vox voxels
        "flip": (torch.rand(n, generator=generator) < 0.5) & torch.tensor(cfg.flip),
        "bias": torch.randn(n, 1, 3, 3, 3, generator=generator) * cfg.bias_field,
        "gain": 1.0 + uniform(n, bound=cfg.gain),
        "offset": uniform(n, bound=cfg.offset),
        "noise_seed": torch.randint(0, 2**31 - 1, (n,), generator=generator),
    }
    # 7 uniform numbers per view once drew a cut-out box (an option removed in decision 0007); still
    # drawn so that every seed keeps the views, and hence the runs, it gave before
    torch.rand(n * 7, generator=generator)
    return params


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    ax, ay, az = angles.unbind(-1)
    one, zero = torch.ones_like(ax), torch.zeros_like(ax)
    rx = torch.stack([one, zero, zero, zero, ax.cos(), -ax.sin(), zero, ax.sin(), ax.cos()], -1).view(
        -1, 3, 3
    )
    ry = torch.stack([ay.cos(), zero, ay.sin(), zero, one, zero, -ay.sin(), zero, ay.cos()], -1).view(
        -1, 3, 3
    )
    rz = torch.stack([az.cos(), -az.sin(), zero, az.sin(), az.cos(), zero, zero, zero, one], -1).view(
        -1, 3, 3
    )
    return rz @ ry @ rx


def intensity_channels(features, intensity_features) -> torch.Tensor:
    """Which input channels are intensities (a scanner's gain and bias field change them) rather
    than measurements of tissue volume (decision 0008)."""
    return torch.tensor([feature in intensity_features for feature in features], dtype=torch.bool)


def apply_view(
    x: torch.Tensor, params: dict[str, torch.Tensor], cfg, intensity: torch.Tensor | None = None
) -> torch.Tensor:
    """The view of a batch ``x`` (B, C, D, H, W) under recorded ``params``; bias field, gain and
    offset change only the channels ``intensity`` marks (a boolean per channel; None: all)."""
    n, channels, *spatial = x.shape
    device = x.device
    p = {k: v.to(device) for k, v in params.items()}
    linear = _rotation(p["rotation"]) * p["scale"][:, None, :]
    flip = torch.where(p["flip"], -1.0, 1.0)
    linear = linear * torch.stack([torch.ones_like(flip), torch.ones_like(flip), flip], -1)[:, :, None]
    # affine_grid works in normalised coordinates (−1…1) ordered (x=W, y=H, z=D)
    size = torch.tensor(spatial[::-1], dtype=x.dtype, device=device)
    shift = p["translation"] * cfg.translation_vox * 2.0 / size
    theta = torch.cat([linear.to(x.dtype), shift[:, :, None].to(x.dtype)], dim=2)
    grid = F.affine_grid(theta, [n, 1, *spatial], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    bias = F.interpolate(p["bias"].to(x.dtype), size=spatial, mode="trilinear", align_corners=True)
    scanned = out * torch.exp(bias)
    scanned = scanned * p["gain"].view(n, 1, 1, 1, 1).to(x.dtype) + p["offset"].view(n, 1, 1, 1, 1).to(
        x.dtype
    )
    if intensity is None:
        out = scanned
    else:
        out = torch.where(intensity.to(device).view(1, channels, 1, 1, 1), scanned, out)
    if cfg.noise > 0:
        noise = torch.stack(
            [
                torch.randn(spatial, generator=torch.Generator().manual_seed(int(s)), dtype=x.dtype)
                for s in params["noise_seed"]
            ]
        )[:, None].to(device)
        out = out + cfg.noise * noise
    return out


def select(params: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    """The parameters of a subset of the views (e.g. one rank's shard of a global batch)."""
    index = torch.as_tensor(rows, dtype=torch.long)
    return {key: value[index] for key, value in params.items()}


def make_views(x: torch.Tensor, cfg, generator: torch.Generator, intensity: torch.Tensor | None = None):
    """Two independent views of a batch; returns (view1, view2, params1, params2)."""
    params1 = draw_view_params(x.shape[0], cfg, generator)
    params2 = draw_view_params(x.shape[0], cfg, generator)
    return apply_view(x, params1, cfg, intensity), apply_view(x, params2, cfg, intensity), params1, params2
