"""A synthetic head around the template brain: CSF, skull, scalp, eyes and neck (issue 20).

The MNI152 2009a template that nilearn ships is skull-stripped, so the simulator builds what a
scanner also sees around the brain, in template space, on the template grid extended downwards
(:data:`NECK_MM`) for the neck. Tissues are layers at a distance from a smoothed hull of the brain,
their thicknesses varying smoothly within and between subjects, with T1-weighted contrast relative
to the template's own tissue intensities: fat (subcutaneous, orbital, diploic marrow) brighter than
white matter, cortical bone and air dark, muscle and skin between cerebrospinal fluid and grey
matter, vitreous like CSF. Bias field and noise come later, with the acquisition.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neurosepclr.data.template import Template, load_template

NECK_MM = 50.0  # the template's field of view ends at z = −72 mm, in the brainstem
HULL_SMOOTH_MM = 4.0  # closes sulci and the interhemispheric fissure: the skull follows the hull
# layer thicknesses (mm) from the hull outwards and their relative spread (smooth in space)
CSF_MM, SKULL_MM, FAT_MM, SKIN_MM = 2.5, 6.5, 5.0, 2.0
THICKNESS_SPREAD = 0.3
# T1w intensities as multiples of the template's white matter
FAT, MARROW, MUSCLE, SKIN, BONE = 1.15, 0.75, 0.45, 0.55, 0.04
EYE_CENTRES_MM = ((-32.0, 50.0, -38.0), (32.0, 50.0, -38.0))  # MNI, in front of the orbital cortex
EYE_RADIUS_MM, ORBIT_MM = 11.0, 5.0
NECK_CENTRE_MM, NECK_AXES_MM = (0.0, -25.0), (52.0, 58.0)  # elliptic neck below the skull base
CORD_MM, CANAL_MM, VERTEBRA_MM, CORD = 4.5, 7.0, 6.0, 0.9  # spinal cord radius, canal, bone; cord T1


@dataclass(frozen=True)
class HeadGrid:
    """The template grid extended ``pad`` voxels downwards, and the head's fixed geometry on it."""

    affine: np.ndarray
    pad: int
    brain: np.ndarray  # the template's brain mask on the extended grid
    outside_mm: np.ndarray  # distance (mm) outside the smoothed brain hull; 0 inside it
    xyz: np.ndarray  # (3, *shape) world coordinates (MNI mm)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.brain.shape  # type: ignore[return-value]

    def extend(self, volume: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A template-grid volume on the extended grid (``fill`` below the template's field of view)."""
        return np.pad(volume, ((0, 0), (0, 0), (self.pad, 0)), constant_values=fill)


@functools.lru_cache(maxsize=4)
def head_grid(resolution: float) -> HeadGrid:
    """The extended grid of the template at ``resolution`` mm and its brain hull distance."""
    template = load_template(resolution)
    pad = int(np.ceil(NECK_MM / resolution))
    affine = template.affine.copy()
    affine[2, 3] -= pad * resolution
    brain = np.pad(template.brain, ((0, 0), (0, 0), (pad, 0)))
    smoothed = ndimage.gaussian_filter(brain.astype(np.float32), HULL_SMOOTH_MM / resolution)
    hull = ndimage.binary_fill_holes(smoothed > 0.25) | brain
    outside_mm = ndimage.distance_transform_edt(~hull, sampling=resolution).astype(np.float32)
    ijk = np.indices(brain.shape, dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape(3, *brain.shape).astype(np.float32)
    return HeadGrid(affine, pad, brain, outside_mm, xyz)


def _smooth_unit(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def head_tissue(
    grid: HeadGrid, white: float, csf: float, rng: np.random.Generator, resolution: float
) -> np.ndarray:
    """T1 intensity of everything outside the brain on ``grid`` (0 inside the brain mask), for one
    subject: layer thicknesses vary by ±``THICKNESS_SPREAD`` over ~2 cm, the whole head by ±10 %."""
    coarse = (grid.shape[0] // 4, grid.shape[1] // 4, grid.shape[2] // 4)
    zoom = np.array(grid.shape) / np.array(coarse)
    scale = float(np.exp(rng.normal(0.0, 0.1)))

    def thickness(mm: float) -> np.ndarray:
        field = ndimage.zoom(_smooth_unit(coarse, 20.0 / resolution / 4.0, rng), zoom, order=1)
        field = field[: grid.shape[0], : grid.shape[1], : grid.shape[2]]
        return mm * scale * np.clip(1.0 + THICKNESS_SPREAD * field, 0.4, 1.8)

    d = grid.outside_mm
    edges = np.cumsum([thickness(mm) for mm in (CSF_MM, SKULL_MM, FAT_MM, SKIN_MM)], axis=0)
    out = np.zeros(grid.shape, dtype=np.float32)
    out[d < edges[3]] = SKIN * white
    out[d < edges[2]] = FAT * white
    skull = d < edges[1]
    depth = (d - edges[0]) / np.maximum(edges[1] - edges[0], 1e-3)  # 0 inner table … 1 outer table
    out[skull] = np.where(np.abs(depth[skull] - 0.5) < 0.2, MARROW * white, BONE * white)
    out[d < edges[0]] = csf

    x, y, z = grid.xyz
    fov_bottom = float(z[..., grid.pad].min())  # the template's lowest slice, in the medulla
    out[z < fov_bottom] = 0.0  # below the skull base only the neck: no layers capping the medulla
    ellipse = ((x - NECK_CENTRE_MM[0]) / NECK_AXES_MM[0]) ** 2 + (
        (y - NECK_CENTRE_MM[1]) / NECK_AXES_MM[1]
    ) ** 2
    neck = (z < fov_bottom + 45.0) & (ellipse < 1.0) & (out == 0)
    out[neck] = np.where(ellipse[neck] > 0.85, FAT * white, MUSCLE * white)
    # the spinal cord continues the medulla, in its canal, in a vertebral ring of marrow
    cx, cy = (float(v[..., grid.pad][grid.brain[..., grid.pad]].mean()) for v in (x, y))
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    below = z < fov_bottom
    out[below & (r < CANAL_MM + VERTEBRA_MM)] = MARROW * white
    out[below & (r < CANAL_MM)] = csf
    out[below & (r < CORD_MM)] = CORD * white

    for centre in EYE_CENTRES_MM:
        r = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        orbit = (r < EYE_RADIUS_MM + ORBIT_MM) & (d > CSF_MM)
        out[orbit] = FAT * white
        out[orbit & (r < EYE_RADIUS_MM)] = csf
    out[grid.brain] = 0.0
    return out


def whole_head(
    template: Template, brain_t1: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, HeadGrid]:
    """The subject's template-space T1 ``brain_t1`` inside its synthetic head, on the extended grid."""
    grid = head_grid(template.resolution)
    white = float(template.t1[template.wm > 0.9].mean())
    csf = float(template.t1[(template.csf > 0.8) & template.brain].mean())
    tissue = head_tissue(grid, white, csf, rng, template.resolution)
    brain = grid.extend(brain_t1)
    # the skull-stripped template fades to 0 at its mask's edge: CSF fills what the brain does not
    inside = grid.brain | (grid.outside_mm == 0)
    background = np.where(inside & (tissue == 0), csf, tissue)
    return np.maximum(brain, np.where(grid.brain, 0.0, background)).astype(np.float32), grid
