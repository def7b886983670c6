"""Semi-synthetic T1w cohort with known subtypes, built on the real MNI152 2009a template.

Every subject starts from the template (nilearn's wheel) and receives, in this order:

1. **salient factors** (patients only): atrophy ``severity × territory`` in the AAL3 regions of its
   subtype, with tapered edges and, with ``spatial_variability > 0``, a random subset of the
   regions and a smooth random modulation. ``atrophy: volume`` (default) shrinks the territory's
   grey matter (a smooth, one-to-one local contraction: its edges retreat by up to
   ``VOLUME_RETREAT_MM × severity``, so the cortex thins and CSF and white matter take the space)
   and adds a small partial-volume loss (``VOLUME_PARTIAL_SHARE × severity``); ``atrophy:
   intensity`` is a partial-volume loss of the whole severity alone;
2. **common factors** (everyone): global grey-matter thinning and ventricle/CSF enlargement with
   age, head size with sex, and an individual smooth anatomical deformation;
3. **acquisition** (everyone): in ``native`` geometry a scanner grid of its own (voxel size,
   orientation, head pose), then the site's contrast (gain, gamma), a smooth multiplicative bias
   field and Rician noise.

A partial-volume loss is a change of contrast: a voxel losing a fraction ΔGM of its grey matter
takes ΔGM of CSF intensity instead (how HYDRA, MAGIC and Smile-GAN were validated: semi-synthetic
atrophy on real anatomy). A contraction is a change of shape, which registration to a template
turns into a Jacobian below 1 (what voxel- and deformation-based morphometry measure). The truth
(group, subtype, severity, regions hit, the grey-matter volume change of every territory, and one
MNI mask per subtype) is written to ``derivatives/truth/``, which no model reads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from neurosepclr import __version__
from neurosepclr.atlases import Atlas, load_atlas
from neurosepclr.config import Config, SimulateConfig, dump_config
from neurosepclr.data.head import NECK_MM, whole_head
from neurosepclr.data.template import SPACE, Template, load_template, make_nifti, res_label
from neurosepclr.errors import ConfigError, OutputError
from neurosepclr.io import atomic_write_bytes, atomic_write_text, nifti_gz_bytes, tsv_text

log = logging.getLogger("neurosepclr")

BACKGROUND_LABEL = "CN"
TARGET_LABEL = "PT"
ORIENTATIONS = ("RAS", "LAS", "LPS", "LPI", "PIR", "ASL")
VOXEL_FACTORS = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.2), (1.1, 1.1, 1.1), (0.95, 0.95, 1.25))
INTENSITY_SCALE = 1000.0  # template WM ≈ 0.85 → about 850 in the written int16 images
AGE_GM_LOSS_PER_YEAR = 0.004  # fraction of GM lost per year after 50 (cross-sectional 0.2–0.5 %/yr)
AGE_VENTRICLE_PER_YEAR = 0.004  # radial expansion of the periventricular region per year after 50
TAPER_MM = 2.0
VOLUME_RETREAT_MM = 10.0  # atrophy: volume — largest retreat of grey matter per unit of severity
VOLUME_SMOOTH_MM = 3.0  # smoothing of the territory's grey matter before its gradient
VOLUME_PARTIAL_SHARE = 0.15  # atrophy: volume — the partial-volume loss, as a share of the severity
VOLUME_SQUARINGS = 6  # scaling and squaring steps that make the contraction one-to-one


@dataclass(frozen=True)
class Site:
    """Acquisition site: intensity gain, gamma contrast, noise level, bias-field strength."""

    name: str
    gain: float
    gamma: float
    noise: float
    bias: float


@dataclass(frozen=True)
class SubjectSpec:
    """Everything drawn for one subject; rendering from it is deterministic."""

    participant_id: str
    group: str
    subtype: str
    severity: float
    regions_hit: tuple[str, ...]
    age: float
    sex: str
    site: str
    head_scale: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    voxel_size: tuple[float, float, float]
    orientation: str
    seed: int


def draw_sites(n_sites: int, noise: float, bias: float, rng: np.random.Generator) -> list[Site]:
    """Site parameters: gain ±15 %, gamma 0.85–1.15, noise 1.5–4 % of WM, bias 0.1–0.3."""
    names = [f"site{chr(ord('A') + i)}" if n_sites <= 26 else f"site{i:02d}" for i in range(n_sites)]
    return [
        Site(
            name=name,
            gain=float(rng.uniform(0.85, 1.15)),
            gamma=float(rng.uniform(0.85, 1.15)),
            noise=float(rng.uniform(0.015, 0.04) * noise),
            bias=float(rng.uniform(0.1, 0.3) * bias),
        )
        for name in names
    ]


def draw_subjects(cfg: SimulateConfig, seed: int, sites: list[Site]) -> list[SubjectSpec]:
    """Draw every subject's factors; participant IDs are shuffled so they reveal no group."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    groups: list[tuple[str, str, tuple[str, ...]]] = [(BACKGROUND_LABEL, "n/a", ())] * cfg.n_controls
    for spec, count in zip(cfg.subtypes, cfg.n_patients_per_subtype, strict=True):
        groups += [(TARGET_LABEL, spec.name, tuple(spec.regions))] * count
    order = rng.permutation(len(groups))
    child_seeds = np.random.SeedSequence([seed, 2]).generate_state(len(groups))
    subjects = []
    for number, index in enumerate(order, start=1):
        group, subtype, regions = groups[index]
        is_patient = group == TARGET_LABEL
        severity = float(rng.uniform(*cfg.severity)) if is_patient else 0.0
        hit = _draw_regions(regions, cfg.spatial_variability, rng) if is_patient else ()
        sex = "F" if rng.random() < 0.5 else "M"
        head_scale = (1.04 if sex == "M" else 0.96) * float(np.exp(rng.normal(0.0, 0.03)))
        native = cfg.geometry == "native"
        rotation = rng.uniform(-cfg.misalignment_deg, cfg.misalignment_deg, 3) if native else np.zeros(3)
        translation = rng.uniform(-cfg.misalignment_mm, cfg.misalignment_mm, 3) if native else np.zeros(3)
        factors = VOXEL_FACTORS[rng.integers(len(VOXEL_FACTORS))] if native else (1.0, 1.0, 1.0)
        voxel = tuple(float(cfg.resolution * f) for f in rng.permutation(factors))
        subjects.append(
            SubjectSpec(
                participant_id=f"sub-{number:04d}",
                group=group,
                subtype=subtype,
                severity=round(severity, 4),
                regions_hit=hit,
                age=round(float(rng.uniform(*cfg.age_range)), 1),
                sex=sex,
                site=sites[int(rng.integers(len(sites)))].name,
                head_scale=round(head_scale if native else 1.0, 4),
                rotation_deg=tuple(round(float(v), 3) for v in rotation),
                translation_mm=tuple(round(float(v), 3) for v in translation),
                voxel_size=voxel,
                orientation=ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))] if native else "RAS",
                seed=int(child_seeds[index]),
            )
        )
    return subjects


def _draw_regions(regions: tuple[str, ...], variability: float, rng: np.random.Generator) -> tuple[str, ...]:
    """Regions hit in one patient: all of them, or each kept with probability 1 − variability/2."""
    if variability <= 0 or len(regions) == 1:
        return regions
    keep = rng.random(len(regions)) >= variability / 2
    if not keep.any():
        keep[rng.integers(len(regions))] = True
    return tuple(r for r, k in zip(regions, keep, strict=True) if k)


def smooth_field(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def territory_weight(mask: np.ndarray, resolution: float) -> np.ndarray:
    """Tapered territory: the binary region mask smoothed over ``TAPER_MM`` and clipped to [0, 1]."""
    smoothed = ndimage.gaussian_filter(mask.astype(np.float32), TAPER_MM / resolution)
    return np.clip(2.0 * smoothed, 0.0, 1.0)


def tissue_intensities(template: Template) -> tuple[float, float]:
    """Mean template T1 intensity of nearly pure grey matter and of nearly pure CSF."""
    gm = float(template.t1[template.gm > 0.8].mean())
    csf = float(template.t1[(template.csf > 0.8) & template.brain].mean())
    return gm, csf


def ventricle_centre(template: Template) -> np.ndarray:
    """World coordinates (mm) of the lateral ventricles' centroid (CSF near the brain's centre)."""
    ijk = np.indices(template.shape).reshape(3, -1)
    xyz = (template.affine[:3, :3] @ ijk + template.affine[:3, 3:4]).reshape(3, *template.shape)
    central = (np.abs(xyz[0]) < 30) & (xyz[1] > -45) & (xyz[1] < 25) & (xyz[2] > -5) & (xyz[2] < 35)
    ventricles = central & (template.csf > 0.5) & template.brain
    return xyz[:, ventricles].mean(axis=1)


def contraction_field(atrophy: np.ndarray, gm: np.ndarray, resolution: float) -> np.ndarray:
    """Pull-back displacement u (3, *shape), in voxels, that shrinks the grey matter where
    ``atrophy`` > 0: the cortex thins and subcortical nuclei shrink, CSF and white matter take
    the space.

    The velocity ``v = −κ ∇(G_σ ∗ (atrophy · gm))`` points away from the territory's grey matter,
    so sampling ``anatomy(x + u(x))`` reads, at its edges, from the neighbouring CSF or white
    matter: its grey matter is squeezed. κ is set so that a sharp edge of severity s retreats by
    about ``VOLUME_RETREAT_MM × s``. ``u = exp(v)`` by scaling and squaring (Arsigny et al. 2006),
    so the map is one-to-one (Jacobian > 0) whatever the severity.
    """
    sigma = VOLUME_SMOOTH_MM / resolution
    smoothed = ndimage.gaussian_filter((atrophy * gm).astype(np.float32), sigma)
    kappa = VOLUME_RETREAT_MM / resolution * sigma * np.sqrt(2.0 * np.pi)
    velocity = -kappa * np.stack(np.gradient(smoothed)).astype(np.float32)
    return exponentiate(velocity, VOLUME_SQUARINGS)


def exponentiate(velocity: np.ndarray, squarings: int) -> np.ndarray:
    """Displacement of the flow of a stationary velocity field (3, *shape), in voxels, after unit
    time: start from v / 2^n and compose the map with itself n times, u ← u + u ∘ (x + u)."""
    displacement = velocity / float(2**squarings)
    grid = np.indices(velocity.shape[1:], dtype=np.float32)
    for _ in range(squarings):
        coords = grid + displacement
        displacement = displacement + np.stack(
            [ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in displacement]
        )
    return displacement.astype(np.float32)


def pullback_jacobian(displacement: np.ndarray) -> np.ndarray:
    """det(I + ∇u) of the pull-back map x ↦ x + u(x); the tissue's volume change is its inverse."""
    grads = [np.gradient(displacement[i]) for i in range(3)]
    jacobian = np.empty((*displacement.shape[1:], 3, 3), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            jacobian[..., i, j] = grads[i][j] + (1.0 if i == j else 0.0)
    return np.linalg.det(jacobian)


@dataclass(frozen=True)
class Anatomy:
    """A subject in template space before acquisition: T1 intensity, the atrophy map (severity ×
    territory), the grey-matter fraction after disease and age, and without the disease."""

    t1: np.ndarray
    atrophy: np.ndarray
    gm: np.ndarray
    gm_without_disease: np.ndarray


def subject_anatomy(
    template: Template,
    spec: SubjectSpec,
    atlas: Atlas,
    cfg: SimulateConfig,
    rng: np.random.Generator,
    intensities: tuple[float, float],
) -> Anatomy:
    """The subject's anatomy in template space (atrophy, then age; no individual deformation)."""
    atrophy = np.zeros(template.shape, dtype=np.float32)
    if spec.group == TARGET_LABEL:
        atrophy = spec.severity * territory_weight(atlas.region_mask(spec.regions_hit), cfg.resolution)
        if cfg.spatial_variability > 0:
            modulation = 1.0 + cfg.spatial_variability * smooth_field(
                template.shape, 6.0 / cfg.resolution, rng
            )
            atrophy = np.clip(atrophy * np.clip(modulation, 0.0, 2.0), 0.0, 0.95)
    t1, gm, partial = template.t1, template.gm, atrophy
    if cfg.atrophy == "volume" and spec.group == TARGET_LABEL:
        shift = contraction_field(atrophy, template.gm, cfg.resolution)
        coords = np.indices(template.shape, dtype=np.float32) + shift
        t1 = ndimage.map_coordinates(template.t1, coords, order=1, mode="nearest")
        gm = ndimage.map_coordinates(template.gm, coords, order=1, mode="nearest")
        partial = VOLUME_PARTIAL_SHARE * atrophy
    age_kept = 1.0 - AGE_GM_LOSS_PER_YEAR * max(spec.age - 50.0, 0.0)
    gm_loss = gm * (1.0 - age_kept * (1.0 - partial))
    gm_intensity, csf_intensity = intensities
    t1 = np.clip(t1 - gm_loss * (gm_intensity - csf_intensity), 0.0, None).astype(np.float32)
    return Anatomy(
        t1, atrophy, (gm - gm_loss).astype(np.float32), (template.gm * age_kept).astype(np.float32)
    )


def territory_volume_change(anatomy: Anatomy, territories: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative grey-matter volume change in each territory (its AAL3 regions) caused by the disease:
    Σ GM after / Σ GM without the disease − 1 (0 for controls, negative for loss)."""
    return {
        name: round(float(anatomy.gm[mask].sum() / anatomy.gm_without_disease[mask].sum() - 1.0), 4)
        for name, mask in territories.items()
    }


def rotation_matrix(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def native_grid(
    corners_world: np.ndarray, voxel_size: tuple[float, float, float], orientation: str, margin: float = 8.0
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Scanner grid with axis codes ``orientation`` (e.g. ``LPS``) covering ``corners_world`` (N, 3)."""
    lo = corners_world.min(axis=0) - margin
    hi = corners_world.max(axis=0) + margin
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = []
    for axis, code in enumerate(orientation):
        world = "RAS".index(code) if code in "RAS" else "LPI".index(code)
        sign = 1.0 if code in "RAS" else -1.0
        affine[world, axis] = sign * voxel_size[axis]
        affine[world, 3] = lo[world] if sign > 0 else hi[world]
        shape.append(int(np.ceil((hi[world] - lo[world]) / voxel_size[axis])) + 1)
    return affine, tuple(shape)  # type: ignore[return-value]


def render_subject(
    spec: SubjectSpec,
    cfg: SimulateConfig,
    template: Template,
    atlas: Atlas,
    site: Site,
    intensities: tuple[float, float],
    centre: np.ndarray,
    territories: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The subject's image as int16, its affine (scanner grid, or the template grid) and the grey-
    matter volume change of every territory."""
    rng = np.random.default_rng(spec.seed)
    subject = subject_anatomy(template, spec, atlas, cfg, rng, intensities)
    res = cfg.resolution
    if not cfg.brain_only:  # its own random stream: brain-only images stay what they were
        anatomy, head = whole_head(template, subject.t1, np.random.default_rng([spec.seed, 1]))
        anatomy_affine, brain = head.affine, head.brain
    else:
        anatomy, anatomy_affine, brain = subject.t1, template.affine, template.brain

    # displacement field (mm, template grid): individual smooth deformation + age-related
    # ventricle enlargement (sampling pulled toward the ventricles' centre).
    sigma_vox = 10.0 / res
    displacement = np.stack(
        [cfg.deformation_mm * smooth_field(template.shape, sigma_vox, rng) for _ in range(3)]
    )
    ijk = np.indices(template.shape, dtype=np.float32).reshape(3, -1)
    xyz = template.affine[:3, :3] @ ijk + template.affine[:3, 3:4]
    offset = xyz - centre[:, None]
    push = AGE_VENTRICLE_PER_YEAR * max(spec.age - 50.0, 0.0)
    displacement -= (push * np.exp(-(offset**2).sum(0) / (2 * 25.0**2)) * offset).reshape(3, *template.shape)

    if cfg.geometry == "native":
        rotation = rotation_matrix(spec.rotation_deg)
        translation = np.asarray(spec.translation_mm)
        object_ijk = np.argwhere(anatomy > 0 if not cfg.brain_only else brain)  # the head, or the brain
        low = object_ijk.min(0)
        if not cfg.brain_only:  # the field of view ends somewhere in the neck
            neck_mm = float(np.random.default_rng([spec.seed, 2]).uniform(10.0, NECK_MM))
            low[2] = max(low[2], np.argwhere(brain)[:, 2].min() - neck_mm / res)
        box = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        corners_vox = low + box * (object_ijk.max(0) - low)
        corners_mni = corners_vox @ anatomy_affine[:3, :3].T + anatomy_affine[:3, 3]
        corners_world = (centre + spec.head_scale * (corners_mni - centre)) @ rotation.T + translation
        affine, shape = native_grid(corners_world, spec.voxel_size, spec.orientation)
        grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
        world = affine[:3, :3] @ grid + affine[:3, 3:4]
        mni = (
            centre[:, None]
            + (rotation.T @ (world - translation[:, None]) - centre[:, None]) / spec.head_scale
        )
    else:
        affine, shape = template.affine, template.shape
        mni = xyz
    inv = np.linalg.inv(template.affine)
    vox = inv[:3, :3] @ mni + inv[:3, 3:4]
    shift = np.stack([ndimage.map_coordinates(d, vox, order=1, mode="nearest") for d in displacement]) / res
    inv = np.linalg.inv(anatomy_affine)
    moved = inv[:3, :3] @ mni + inv[:3, 3:4] + shift
    image = ndimage.map_coordinates(anatomy, moved, order=1, mode="constant", cval=0.0).reshape(shape)
    brain_mask = None
    if not cfg.brain_only:
        brain_mask = ndimage.map_coordinates(brain.astype(np.float32), moved, order=1, mode="constant")
        brain_mask = (brain_mask.reshape(shape) > 0.5).astype(np.uint8)

    # acquisition: contrast (gamma, gain), smooth bias field, Rician noise
    image = site.gain * np.power(np.clip(image, 0.0, None), site.gamma)
    coarse = rng.standard_normal((4, 4, 4))
    bias = ndimage.zoom(coarse, np.array(shape) / 4.0, order=3, mode="nearest")[
        : shape[0], : shape[1], : shape[2]
    ]
    bias = (bias - bias.mean()) / (bias.std() + 1e-8)
    image = image * np.exp(site.bias * 0.5 * bias)
    sigma = site.noise * 0.85
    noisy = np.hypot(image + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
    image = np.clip(np.rint(noisy * INTENSITY_SCALE), 0, 32767).astype(np.int16)
    return image, affine, territory_volume_change(subject, territories), brain_mask


def _render_to_file(
    spec: SubjectSpec,
    cfg: SimulateConfig,
    template: Template,
    atlas: Atlas,
    site: Site,
    intensities: tuple[float, float],
    centre: np.ndarray,
    territories: dict[str, np.ndarray],
    out_dir: Path,
) -> tuple[str, dict[str, float]]:
    data, affine, changes, brain_mask = render_subject(
        spec, cfg, template, atlas, site, intensities, centre, territories
    )
    code = 4 if cfg.geometry == "mni" else 1
    pid = spec.participant_id
    atomic_write_bytes(
        out_dir / pid / "anat" / f"{pid}_T1w.nii.gz", nifti_gz_bytes(make_nifti(data, affine, code))
    )
    if brain_mask is not None:  # the truth extraction is scored against, on the image's own grid
        path = out_dir / "derivatives" / "truth" / pid / "anat" / f"{pid}_desc-brain_mask.nii.gz"
        atomic_write_bytes(path, nifti_gz_bytes(make_nifti(brain_mask, affine, code)))
    return spec.participant_id, changes


def _json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def simulate(
    config: Config, out_dir: str | Path, n_jobs: int = 1, force: bool = False, progress: bool = True
) -> Path:
    """Write the simulated BIDS dataset to ``out_dir`` (atomically: built aside, then renamed)."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    cfg = config.simulate
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        raise OutputError(f"{out_dir} already exists and is not empty; use --force to replace it")
    atlas_native = load_atlas("aal")
    for spec in cfg.subtypes:
        try:
            atlas_native.region_mask(spec.regions)
        except KeyError as exc:
            raise ConfigError(f"simulate.subtypes[{spec.name}].regions: {exc.args[0]}") from None
    n_subjects = cfg.n_controls + sum(cfg.n_patients_per_subtype)
    if n_subjects < 1:
        raise ConfigError("simulate: the cohort is empty (n_controls and n_patients_per_subtype are 0)")

    template = load_template(cfg.resolution)
    atlas = atlas_native.resampled_to(template.affine, template.shape)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    sites = draw_sites(cfg.n_sites, cfg.noise, cfg.bias_field, rng)
    site_by_name = {s.name: s for s in sites}
    subjects = draw_subjects(cfg, config.seed, sites)
    intensities = tissue_intensities(template)
    centre = ventricle_centre(template)
    territories = {spec.name: atlas.region_mask(spec.regions) for spec in cfg.subtypes}

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir.parent}: {exc.strerror}") from None
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        jobs = (
            delayed(_render_to_file)(
                s, cfg, template, atlas, site_by_name[s.site], intensities, centre, territories, partial
            )
            for s in subjects
        )
        runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        changes = dict(
            tqdm(runner(jobs), total=len(subjects), desc="simulate", unit="subject", disable=not progress)
        )
        _write_metadata(partial, config, subjects, sites, atlas, template, changes)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            partial.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "simulated %d subjects (%d controls, %d patients) in %s",
        len(subjects),
        cfg.n_controls,
        len(subjects) - cfg.n_controls,
        out_dir,
    )
    return out_dir


def _write_metadata(
    root: Path,
    config: Config,
    subjects: list[SubjectSpec],
    sites: list[Site],
    atlas: Atlas,
    template: Template,
    volume_changes: dict[str, dict[str, float]],
) -> None:
    cfg = config.simulate
    generated_by = [
        {
            "Name": "neurosepclr",
            "Version": __version__,
            "Description": f"neurosepclr simulate (seed {config.seed}, geometry {cfg.geometry})",
        }
    ]
    atomic_write_text(
        root / "dataset_description.json",
        _json(
            {
                "Name": "neurosepclr semi-synthetic cohort",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "License": "CC0",
                "GeneratedBy": generated_by,
            }
        ),
    )
    atomic_write_text(
        root / "README",
        (
            "Semi-synthetic T1w cohort written by `neurosepclr simulate` from the MNI152 ICBM 2009a\n"
            "symmetric template (nilearn) and AAL3 regions. Not real patients. The ground truth is in\n"
            "derivatives/truth/ (never read by the models).\n"
        ),
    )
    frame = pd.DataFrame(
        {
            "participant_id": [s.participant_id for s in subjects],
            "diagnosis": [s.group for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
            "site": [s.site for s in subjects],
        }
    ).sort_values("participant_id")
    atomic_write_text(root / "participants.tsv", tsv_text(frame))
    atomic_write_text(
        root / "participants.json",
        _json(
            {
                "participant_id": {"Description": "subject identifier"},
                "diagnosis": {
                    "Description": "group",
                    "Levels": {
                        BACKGROUND_LABEL: "healthy control (background)",
                        TARGET_LABEL: "patient (target)",
                    },
                },
                "age": {"Description": "age at scan", "Units": "years"},
                "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
                "site": {"Description": "acquisition site"},
            }
        ),
    )

    truth_dir = root / "derivatives" / "truth"
    atomic_write_text(
        truth_dir / "dataset_description.json",
        _json(
            {
                "Name": "neurosepclr simulation ground truth",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": generated_by,
            }
        ),
    )
    truth = pd.DataFrame(
        {
            "participant_id": [s.participant_id for s in subjects],
            "group": [s.group for s in subjects],
            "subtype": [s.subtype for s in subjects],
            "severity": [s.severity for s in subjects],
            "regions_hit": [",".join(s.regions_hit) if s.regions_hit else "n/a" for s in subjects],
            "age": [s.age for s in subjects],
            "sex": [s.sex for s in subjects],
            "site": [s.site for s in subjects],
            "head_scale": [s.head_scale for s in subjects],
            "orientation": [s.orientation for s in subjects],
            "voxel_size": ["x".join(f"{v:g}" for v in s.voxel_size) for s in subjects],
            "rotation_deg": [",".join(f"{v:g}" for v in s.rotation_deg) for s in subjects],
            "translation_mm": [",".join(f"{v:g}" for v in s.translation_mm) for s in subjects],
            **{
                f"gm_volume_change_{spec.name}": [
                    volume_changes[s.participant_id][spec.name] for s in subjects
                ]
                for spec in cfg.subtypes
            },
        }
    ).sort_values("participant_id")
    atomic_write_text(truth_dir / "truth.tsv", tsv_text(truth))
    atomic_write_text(truth_dir / "sites.tsv", tsv_text(pd.DataFrame([asdict(s) for s in sites])))
    res = res_label(cfg.resolution)
    rows = []
    for spec in cfg.subtypes:
        mask = atlas.region_mask(spec.regions).astype(np.uint8)
        name = f"space-{SPACE}_res-{res}_desc-{spec.name}_mask.nii.gz"
        atomic_write_bytes(truth_dir / name, nifti_gz_bytes(template.image(mask, dtype=np.uint8)))
        rows.append(
            {
                "subtype": spec.name,
                "mask": name,
                "regions": ",".join(spec.regions),
                "n_voxels": int(mask.sum()),
                "atlas": "aal",
            }
        )
    atomic_write_text(truth_dir / "subtypes.tsv", tsv_text(pd.DataFrame(rows)))
    atomic_write_text(truth_dir / "simulation.yaml", dump_config(config))
    atomic_write_text(truth_dir / "atlas_licence.txt", atlas.licence + "\n")
