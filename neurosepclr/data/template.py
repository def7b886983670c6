"""The MNI152 ICBM 2009a nonlinear symmetric template, read from nilearn's wheel (offline).

nilearn ships the 1 mm T1, grey-matter and white-matter maps of the 2009a symmetric template
(skull-stripped, 197×233×189, RAS). :func:`load_template` resamples them to an analysis
resolution on a grid with the same origin and RAS axes, so every derived image carries a real
MNI affine (``space-MNI152NLin2009aSym``).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SPACE = "MNI152NLin2009aSym"


def res_label(resolution: float) -> str:
    """BIDS ``res-`` label of a resolution in mm: 2 → ``2``, 1.5 → ``1p5``."""
    return f"{resolution:g}".replace(".", "p")


_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_dir() -> Path:
    """Folder of nilearn's packaged template files (no import of nilearn's heavy modules)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("nilearn is not installed; it ships the MNI152 2009a templates")
    return Path(spec.origin).parent / "datasets" / "data"


@dataclass(frozen=True)
class Template:
    """MNI template maps on one grid: T1 intensity (0–1), GM/WM/CSF probabilities, brain mask."""

    resolution: float
    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.t1.shape  # type: ignore[return-value]

    def image(self, data: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
        """A NIfTI image on this grid with the template's affine (qform = sform = MNI, code 4)."""
        return make_nifti(np.asarray(data, dtype=dtype), self.affine, code=4)


def grid_for_resolution(resolution: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """RAS grid at ``resolution`` mm covering the 1 mm template's field of view, same origin."""
    header = nib.load(template_dir() / _FILES["t1"])
    shape_1mm = np.array(header.shape[:3])
    affine = header.affine.copy()
    shape = tuple(int(n) for n in np.floor((shape_1mm - 1) / resolution).astype(int) + 1)
    affine[:3, :3] = np.diag([resolution] * 3)
    return affine, shape  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def load_template(resolution: float = 2.0) -> Template:
    """Template maps at ``resolution`` mm (linear interpolation after anti-alias smoothing)."""
    if not 0.5 <= resolution <= 8.0:
        raise ValueError(f"template resolution must be within 0.5–8 mm, got {resolution}")
    affine, shape = grid_for_resolution(resolution)
    maps = {}
    for key, name in _FILES.items():
        data = np.asarray(nib.load(template_dir() / name).dataobj, dtype=np.float32) / 255.0
        if resolution > 1.0:
            data = ndimage.gaussian_filter(data, sigma=0.4 * (resolution - 1.0) + 1e-6)
        coords = np.indices(shape, dtype=np.float32).reshape(3, -1) * resolution
        maps[key] = ndimage.map_coordinates(data, coords, order=1, mode="constant").reshape(shape)
    brain = maps["t1"] > 0.05
    csf = np.clip(brain.astype(np.float32) - maps["gm"] - maps["wm"], 0.0, 1.0)
    return Template(resolution, affine, maps["t1"], maps["gm"], maps["wm"], csf, brain)


def make_nifti(data: np.ndarray, affine: np.ndarray, code: int = 1) -> nib.Nifti1Image:
    """NIfTI-1 image with qform = sform = ``affine`` (``code``: 1 scanner, 4 MNI) and blank text fields."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=code)
    img.set_sform(affine, code=code)
    header = img.header
    header["descrip"] = b""
    header["aux_file"] = b""
    header["intent_name"] = b""
    header["db_name"] = b""
    header.set_xyzt_units("mm", "sec")
    return img
