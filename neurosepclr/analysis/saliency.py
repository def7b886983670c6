"""Voxel attributions of the salient representation, with captum, and region tables on atlases.

**Scalar target.** For a volume ``x`` the attributed quantity is the distance of its salient
representation from the background's null point, ``‖s(x) − s̄_bg‖₂`` where ``s̄_bg`` is the mean
salient representation of the training controls. SepCLR's information-less background term pulls
controls' ``s`` to one point (method.md, eq. for L_BG); the distance from it is how "patient-like"
the model finds the image, so its attribution answers *which voxels make this subject salient*.
With ``whitening`` W (the controls' whitening of ``subtype.standardise: controls``) the distance is
``‖(s(x) − s̄_bg) W‖₂``, the Mahalanobis distance from the controls — the metric the subtypes were
found in, so directions in which controls themselves vary (site, anatomy) count for less.

**Methods.** ``integrated_gradients`` (captum ``IntegratedGradients``, baseline = the controls' mean
input, i.e. zeros after ``train.input_norm=controls``), ``smoothgrad`` (captum ``NoiseTunnel`` over
``Saliency``) and ``occlusion`` (captum ``Occlusion``, a sliding cube set to the baseline).
Attributions are computed batch by batch with the model in eval mode.
"""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

METHODS = ("integrated_gradients", "smoothgrad", "occlusion")


class DistanceFromBackground(torch.nn.Module):
    """``x ↦ ‖(s(x) − s̄_bg) W‖₂`` (W = identity unless given), one scalar per volume (the target)."""

    def __init__(
        self, model: torch.nn.Module, background_point: torch.Tensor, whitening: torch.Tensor | None = None
    ):
        super().__init__()
        self.model = model
        self.register_buffer("background_point", background_point.detach().clone())
        eye = torch.eye(len(background_point), dtype=background_point.dtype)
        self.register_buffer("whitening", (eye if whitening is None else whitening).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, salient = self.model.forward_features(x)
        return torch.linalg.vector_norm((salient - self.background_point) @ self.whitening, dim=1)


def attribute(
    model: torch.nn.Module,
    volumes: torch.Tensor,
    background_point: torch.Tensor,
    baseline: torch.Tensor,
    method: str = "integrated_gradients",
    whitening: torch.Tensor | None = None,
    batch_size: int = 8,
    n_steps: int = 24,
    smoothgrad_samples: int = 16,
    smoothgrad_sd: float = 0.3,
    occlusion_size: int = 4,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Attributions (N, C, D, H, W) of :class:`DistanceFromBackground` to each input voxel of each
    channel (one channel per input feature)."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    if method not in METHODS:
        raise ValueError(f"saliency method must be one of {', '.join(METHODS)}, got {method!r}")
    target = DistanceFromBackground(model, background_point, whitening).to(device).eval()
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    baseline = baseline.to(device)
    out = []
    for start in range(0, len(volumes), batch_size):
        x = volumes[start : start + batch_size].to(device).requires_grad_(method != "occlusion")
        base = baseline.expand_as(x).contiguous()
        if method == "integrated_gradients":
            result = IntegratedGradients(target).attribute(
                x, baselines=base, n_steps=n_steps, internal_batch_size=batch_size * 4
            )
        elif method == "smoothgrad":
            result = NoiseTunnel(Saliency(target)).attribute(
                x, nt_type="smoothgrad", nt_samples=smoothgrad_samples, stdevs=smoothgrad_sd, abs=False
            )
        else:
            size = (1, occlusion_size, occlusion_size, occlusion_size)
            stride = (
                1,
                max(1, occlusion_size // 2),
                max(1, occlusion_size // 2),
                max(1, occlusion_size // 2),
            )
            with torch.no_grad():
                result = Occlusion(target).attribute(
                    x, sliding_window_shapes=size, strides=stride, baselines=base
                )
        out.append(result.detach().float().cpu())
    return torch.cat(out).numpy()


def saliency_rows(labels: np.ndarray, control_rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Rows attributed for the group maps: all of them with ``limit`` 0, else at most ``limit`` of
    each subtype and of the controls, drawn without replacement (seeded), in row order. The maps
    are means over subjects, so their cost stays bounded in N while their noise does not grow."""
    if limit <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    groups = np.where(control_rows, "\0controls", labels.astype(str))
    chosen = []
    for group in sorted(set(groups)):
        members = np.flatnonzero(groups == group)
        chosen.append(rng.choice(members, limit, replace=False) if len(members) > limit else members)
    return np.sort(np.concatenate(chosen))


def group_maps(
    attributions: np.ndarray, labels: np.ndarray, control_rows: np.ndarray, absolute: np.ndarray | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Per label: mean |attribution| (``saliency``), mean signed attribution (``signed``) and the
    z-statistic of mean |attribution| against the controls' (``zmap``). ``absolute``: the
    magnitudes to average instead of ``|attributions|`` (several input channels: the sum of each
    channel's magnitude, so channels of opposite sign do not cancel).

    The z-map is a one-sided Welch test per voxel (:func:`~neurosepclr.analysis.statistics.welch_z`):
    does this subtype's salient code depend on the voxel more than the controls' codes do? It is
    uncorrected for the number of voxels; z ≥ 3.09 is p < 0.001 at one voxel.
    """
    from neurosepclr.analysis.statistics import welch_z

    absolute = np.abs(attributions) if absolute is None else absolute
    controls = absolute[control_rows]
    n_controls = len(controls)
    reference_mean = controls.mean(axis=0) if n_controls else np.zeros(absolute.shape[1:])
    reference_var = controls.var(axis=0, ddof=1) if n_controls > 1 else np.zeros(absolute.shape[1:])
    maps = {}
    for label in sorted(set(labels[~control_rows])):
        rows = (labels == label) & ~control_rows
        group = absolute[rows]
        mean_abs = group.mean(axis=0)
        variance = group.var(axis=0, ddof=1) if len(group) > 1 else np.zeros_like(mean_abs)
        zmap = (
            welch_z(mean_abs, variance, len(group), reference_mean, reference_var, n_controls)
            if n_controls > 1 and len(group) > 1
            else np.zeros_like(mean_abs)
        )
        maps[str(label)] = {
            "saliency": mean_abs,
            "signed": attributions[rows].mean(axis=0),
            "zmap": zmap.astype(np.float32),
        }
    return maps


# structures on the midline whatever an atlas's voxels say (AAL3's Vermis_3 lies mostly right of x = 0)
MIDLINE_NAMES = r"vermis|brain.?stem|3rd.ventricle|4th.ventricle|^cc_|corpus.callosum|raphe|optic.chiasm"


def hemisphere(name: str, centroid_x_mm: float, left_fraction: float | None = None) -> str:
    """'midline' for structures on it by name (vermis, brainstem, third and fourth ventricles, corpus
    callosum, raphe, optic chiasm); 'left' / 'right' from the region name (``_L``/``_R``,
    ``Left``/``Right``, ``lh``/``rh``); when
    the name does not say, 'midline' for a region with 20–80 % of its voxels left of x = 0
    (``left_fraction``; vermis, brainstem) or a centroid within 2 mm of x = 0, else the side of its
    centroid (RAS+ x)."""
    lowered = name.lower()
    if re.search(MIDLINE_NAMES, lowered):
        return "midline"
    if re.search(r"(^|[_\-. ])(l|lh|left)($|[_\-. ])", lowered) or lowered.startswith("left"):
        return "left"
    if re.search(r"(^|[_\-. ])(r|rh|right)($|[_\-. ])", lowered) or lowered.startswith("right"):
        return "right"
    if abs(centroid_x_mm) <= 2.0 or (left_fraction is not None and 0.2 <= left_fraction <= 0.8):
        return "midline"
    return "left" if centroid_x_mm < 0 else "right"


def region_table(saliency: np.ndarray, signed: np.ndarray, affine: np.ndarray, atlas) -> pd.DataFrame:
    """Every region of the atlas ranked by mean |saliency| (the maps resampled trilinearly onto the
    atlas grid): full name, hemisphere, volume in mm³, mean signed and absolute saliency, share of the
    absolute saliency summed over all labelled voxels."""
    from neurosepclr.analysis.clusters import resample_map
    from neurosepclr.atlases import full_region_name

    absolute = resample_map(np.abs(saliency), affine, atlas.affine, atlas.labels.shape)
    signed_at_atlas = resample_map(signed, affine, atlas.affine, atlas.labels.shape)
    labels = atlas.labels
    columns = ["rank", "region", "region_name", "label", "hemisphere", "volume_mm3", "mean_saliency",
               "mean_abs_saliency", "share_abs_saliency"]  # fmt: skip
    index = np.array(sorted(i for i in np.unique(labels) if i > 0 and int(i) in atlas.names))
    if index.size == 0:
        return pd.DataFrame(columns=columns)
    ones = np.ones_like(labels, dtype=np.float64)
    counts = ndimage.sum(ones, labels, index)
    x_mm = atlas.affine[0, 0] * np.indices(labels.shape)[0] + atlas.affine[0, 3]
    left = ndimage.sum((x_mm < 0).astype(np.float64), labels, index) / counts
    sums_abs = ndimage.sum(absolute, labels, index)
    sums_signed = ndimage.sum(signed_at_atlas, labels, index)
    centroids = ndimage.center_of_mass(ones, labels, index)
    centroid_x = [float((atlas.affine @ np.array([*c, 1.0]))[0]) for c in centroids]
    total = sums_abs.sum()
    names = [atlas.names[int(i)] for i in index]
    frame = pd.DataFrame(
        {
            "region": names,
            "region_name": [full_region_name(atlas.name, n) for n in names],
            "label": index.astype(int),
            "hemisphere": [hemisphere(n, x, f) for n, x, f in zip(names, centroid_x, left, strict=True)],
            "volume_mm3": counts * round(abs(float(np.linalg.det(atlas.affine[:3, :3]))), 6),
            "mean_saliency": sums_signed / counts,
            "mean_abs_saliency": sums_abs / counts,
            "share_abs_saliency": sums_abs / total if total > 0 else np.nan,
        }
    )
    frame = frame.sort_values("mean_abs_saliency", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame[columns]


def map_image(values: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A float32 NIfTI in template space: qform = sform = the grid's real affine (code 4, MNI)."""
    from neurosepclr.data.template import make_nifti

    return make_nifti(values.astype(np.float32), affine, code=4)
