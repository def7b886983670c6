"""Brain extraction in native space, before registration (issue 20; docs/preprocess.md).

``deepbet`` (Fisch et al. 2024, MIT): two 3D U-Nets shipped inside the ``deepbet`` wheel as
TorchScript archives. The first finds the brain's bounding box on the whole image resampled to
128³; the second segments the box resampled to 256³. The networks take the image in RAS voxel
order, intensity-scaled between its 0.5th and 99.5th percentiles and standardised to the
ImageNet-like mean and spread they were trained with. We load the archives ourselves (the
package's own module imports a GUI toolkit): the version is pinned, each file's SHA-256 is checked
before loading, and ``torch.jit.load`` reads TorchScript (no Python pickle of arbitrary objects).

``none`` (inputs already skull-stripped) skips this stage: the template's mask applies after
registration, as before.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from neurosepclr.errors import InputDataError, MissingDependencyError, NeurosepclrError
from neurosepclr.hardware import native_cpu_bf16
from neurosepclr.io import sha256_file

DEEPBET_VERSION = "1.0.2"
DEEPBET_SHA256 = {
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
}
BOX_SHAPE, BRAIN_SHAPE, BOX_MARGIN = (128, 128, 128), (256, 256, 256), 0.1
# network input scaling (the values deepbet was trained with)
INPUT_MEAN, INPUT_SPREAD = 0.449, 0.226
# an adult brain mask (brain and the CSF inside the skull, deepbet's TIV: 1.1-2.0 L in adults; the
# simulator's MNI-sized subjects 1.3-2.8 L) lies within the plausible volumes; outside them QC flags
# the subject. Outside the possible ones there is no brain to register.
PLAUSIBLE_MASK_ML, POSSIBLE_MASK_ML = (800.0, 2800.0), (300.0, 4000.0)
# neighbouring voxels of a brain correlate (tissue, folds: about 0.85-0.92 at 2-3 mm, noisy or not);
# noise and an evenly filled phantom do not (about 0): deepbet confidently segments both
MIN_STRUCTURE = 0.3


class ModelFileError(NeurosepclrError):
    """A shipped network file is missing, of another version, or altered."""

    exit_code = MissingDependencyError.exit_code


@dataclass(frozen=True)
class BrainMask:
    """A native-space brain mask and how it was obtained."""

    mask: np.ndarray  # bool, the image's grid
    volume_ml: float
    method: str


def _deepbet_file(name: str) -> Path:
    """The path of one of deepbet's network files, from the installed distribution's file list."""
    from importlib import metadata

    try:
        dist = metadata.distribution("deepbet")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            "preprocess.brain_extraction: deepbet needs the 'deepbet' package, which is not installed; "
            f"install it with: pip install 'neurosepclr[preprocess]' (deepbet=={DEEPBET_VERSION})"
        ) from None
    if dist.version != DEEPBET_VERSION:
        raise ModelFileError(
            f"preprocess.brain_extraction: deepbet {dist.version} is installed; neurosepclr checks and "
            f"loads the networks of deepbet {DEEPBET_VERSION} only (pip install deepbet=={DEEPBET_VERSION})"
        )
    for entry in dist.files or ():
        if entry.name == name and entry.parent.name == "models":
            return Path(dist.locate_file(entry))
    raise ModelFileError(f"preprocess.brain_extraction: deepbet's file models/{name} is not installed")


@functools.lru_cache(maxsize=2)
def load_deepbet(device: str = "cpu"):
    """The (bounding-box, brain) TorchScript networks, each checked against its pinned SHA-256."""
    import warnings

    import torch

    paths = [_deepbet_file(name) for name in ("bbox_model.pt", "model.pt")]
    for path in paths:  # every file checked before any is loaded
        if not path.is_file():
            raise ModelFileError(f"preprocess.brain_extraction: {path} is missing")
        found = sha256_file(path)
        if found != DEEPBET_SHA256[path.name]:
            raise ModelFileError(
                f"preprocess.brain_extraction: {path} has SHA-256 {found[:12]}…, not the pinned "
                f"{DEEPBET_SHA256[path.name][:12]}… of deepbet {DEEPBET_VERSION}; refusing to load it"
            )
    with warnings.catch_warnings():  # TorchScript is the format deepbet ships; its loader is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return tuple(torch.jit.load(str(path), map_location=device).eval() for path in paths)


def _network_input(volume, low: float, high: float):
    """Percentile-scaled to [0, 1], standardised, then set to the training mean and spread."""
    scaled = ((volume - low) / max(high - low, 1e-6)).clamp(0.0, 1.0)
    scaled = (scaled - scaled.mean()) / (scaled.std() + 1e-6)
    return (INPUT_SPREAD * scaled + INPUT_MEAN)[None, None]


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def _box_around(mask_small: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The box holding ``mask_small`` scaled to ``shape``, widened by ``BOX_MARGIN`` of its size on
    each side (only planes where more than 2 % of the slice is foreground count)."""
    box = []
    for axis, size in enumerate(shape):
        others = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(mask_small.mean(axis=others) > 0.02)
        if occupied.size == 0:  # too little foreground for a box: no brain found
            return None
        scale = size / mask_small.shape[axis]
        centre = scale * (occupied.min() + occupied.max() + 1) / 2
        extent = scale * (occupied.max() + 1 - occupied.min()) * (1 + 2 * BOX_MARGIN)
        low, high = int(round(centre) - round(extent) / 2), int(round(centre) + round(extent) / 2)
        box.append(slice(max(0, low), min(size, high)))
    return tuple(box)


def deepbet_probability(data: np.ndarray, device: str = "cpu") -> np.ndarray:
    """deepbet's brain probability on the grid of ``data`` (a T1w volume in RAS voxel order)."""
    import torch
    import torch.nn.functional as F

    box_net, brain_net = load_deepbet(device)
    # bf16 on a CPU with bf16 instructions: 1.6x faster, masks within 2e-4 Dice of fp32
    # (benchmarks/README.md, "Brain extraction on whole heads")
    bf16 = device == "cpu" and native_cpu_bf16()
    volume = torch.nan_to_num(torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=device))
    small = F.interpolate(volume[None, None], BOX_SHAPE, mode="nearest-exact")[0, 0]
    levels = torch.tensor([0.005, 0.995], device=device)
    low, high = (float(q) for q in torch.quantile(small.flatten(), levels))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        box_probability = box_net(_network_input(small, low, high))[0, 1].float().cpu().numpy()
        box = _box_around(largest_component(box_probability > 0.5).astype(np.float32), data.shape)
        if box is None:
            return np.zeros(data.shape, dtype=np.float32)
        crop = F.interpolate(volume[box][None, None], BRAIN_SHAPE, mode="nearest-exact")
        brain = brain_net(_network_input(crop[0, 0], low, high))[0, 1][None, None].float()
        back = F.interpolate(brain, tuple(s.stop - s.start for s in box), mode="nearest-exact")[0, 0]
    probability = np.zeros(data.shape, dtype=np.float32)
    probability[box] = back.cpu().numpy()
    return probability


def clean_mask(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Threshold, keep the largest connected piece, fill enclosed holes (ventricles stay inside)."""
    mask = probability > threshold
    if not mask.any():
        return mask
    return ndimage.binary_fill_holes(largest_component(mask))


def extract_brain(data: np.ndarray, voxel_volume_mm3: float, method: str, device: str = "cpu") -> BrainMask:
    """The brain mask of one native T1w image (RAS voxel order) by ``method`` (deepbet)."""
    if method == "deepbet":
        mask = clean_mask(deepbet_probability(data, device))
    else:
        raise ValueError(f"unknown brain extraction method {method!r}")
    return BrainMask(mask, float(mask.sum() * voxel_volume_mm3 / 1000.0), method)


def structure_inside(data: np.ndarray, mask: np.ndarray) -> float:
    """Smallest, over the three axes, correlation between neighbouring voxels inside ``mask``
    eroded by two voxels: about 0 for noise or an evenly filled object, high for anatomy."""
    inner = ndimage.binary_erosion(mask, iterations=2)
    correlations = []
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        both = inner[tuple(first)] & inner[tuple(second)]
        if both.sum() < 100:
            return 0.0
        a, b = data[tuple(first)][both], data[tuple(second)][both]
        if a.std() == 0 or b.std() == 0:
            return 0.0
        correlations.append(float(np.corrcoef(a, b)[0, 1]))
    return min(correlations)


def check_brain(brain: BrainMask, data: np.ndarray, label: str, relpath: str) -> list[str]:
    """Refuse an image with no brain in it (exit 65, one line), before anything is registered: an
    empty mask or one of impossible volume, or no anatomical structure inside it (noise, a
    phantom). Returns the QC warnings: a mask of implausible volume (a part of a head, a child,
    extraction leaking into the scalp)."""
    low, high = POSSIBLE_MASK_ML
    method = f"brain extraction ({brain.method})"
    if not low <= brain.volume_ml <= high:
        raise InputDataError(
            f"{label}: {relpath}: {method} found {brain.volume_ml:.0f} mL of brain, outside the possible "
            f"{low:.0f}-{high:.0f} mL; is this a T1w image of a head? (brain_extraction: none if it is "
            "already skull-stripped)"
        )
    structure = structure_inside(data, brain.mask)
    if structure < MIN_STRUCTURE:
        raise InputDataError(
            f"{label}: {relpath}: no anatomy inside the {brain.volume_ml:.0f} mL that {method} found "
            f"(neighbouring-voxel correlation {structure:.2f} < {MIN_STRUCTURE}): noise or a phantom, "
            "not a brain"
        )
    low, high = PLAUSIBLE_MASK_ML
    if not low <= brain.volume_ml <= high:
        volume = f"{brain.volume_ml:.0f} mL"
        return [f"brain mask of {volume}, outside the plausible {low:.0f}-{high:.0f} mL: view it"]
    return []
