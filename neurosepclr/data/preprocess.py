"""``neurosepclr preprocess``: a BIDS cohort → model-ready volumes in MNI152NLin2009aSym space.

Per image: validation (:mod:`neurosepclr.data.validate`) → reorientation to RAS → brain extraction
(:mod:`neurosepclr.data.brain_extraction`; the head zeroed, the image cut to the brain's box) →
resampling to the analysis resolution → N4 bias-field correction (ANTs) → registration to the
MNI152 2009a template at the analysis resolution (ANTs; rigid, affine or SyN) → the template's
brain mask → cropping to the template's brain box → robust intensity normalisation within the
brain → QC (correlation with the template inside the mask, and a PNG mosaic).

Outputs form a BIDS derivatives folder; every file is written atomically. Each subject's sidecar
JSON records the SHA-256 of its input and of the parameters, so a re-run skips subjects whose input
content and parameters are unchanged (cache keyed by content, not by path).

Any number of processes, on one machine or many sharing the folder, may preprocess into it at once
(``--participant-label``, ``--shard I/N``): a subject is processed under its own lock, its sidecar
(or, when it is refused, an exclusion record) is its record, and the group tables (``cohort.tsv``,
``qc.tsv``, ``excluded.tsv``, ``tissue_volumes.tsv``) are rebuilt from the records under a group
lock at the end of each process, or alone with ``--group-only``. Processes with different
settings on one folder at the same time are refused.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from neurosepclr import __version__
from neurosepclr.config import Config, PreprocessConfig, dump_config
from neurosepclr.data.brain_extraction import BrainMask, check_brain, extract_brain
from neurosepclr.data.cohort import CohortTable, GroupMapping, build_cohort, read_participants
from neurosepclr.data.template import SPACE, load_template, make_nifti, res_label
from neurosepclr.data.validate import ValidationPolicy, validate_image
from neurosepclr.errors import InputDataError, NeurosepclrError, OutputError, TemporaryFailure, require
from neurosepclr.io import (
    atomic_write_bytes,
    atomic_write_text,
    file_lock,
    is_locked,
    nifti_gz_bytes,
    sha256_file,
    sha256_json,
    tsv_text,
)

log = logging.getLogger("neurosepclr")

PIPELINE_VERSION = "1"  # bump whenever processing changes: it invalidates every cached subject
ANTS_TRANSFORMS = {"rigid": "Rigid", "affine": "Affine", "syn": "SyN"}


@dataclass(frozen=True)
class OutputGrid:
    """The analysis grid: the template at the analysis resolution, cropped to its brain box."""

    resolution: float
    affine: np.ndarray
    shape: tuple[int, int, int]
    t1: np.ndarray
    brain: np.ndarray
    gm: np.ndarray  # the template's tissue probabilities: priors of the segmentation
    wm: np.ndarray
    csf: np.ndarray

    def image(self, data: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
        return make_nifti(np.asarray(data, dtype=dtype), self.affine, code=4)


BRAIN_BOX_MARGIN_MM = 8.0  # the head outside the brain's box is cut before N4 and registration


def box_around(mask: np.ndarray, zooms, margin_mm: float) -> tuple[slice, ...]:
    """The bounding box of ``mask`` widened by ``margin_mm``, clipped to the grid."""
    found = np.argwhere(mask)
    margin = np.ceil(margin_mm / np.asarray(zooms, dtype=float)).astype(int)
    low = np.maximum(found.min(0) - margin, 0)
    high = np.minimum(found.max(0) + 1 + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


@functools.lru_cache(maxsize=4)
def analysis_grid(resolution: float, margin_mm: float) -> OutputGrid:
    """Template grid at ``resolution`` cropped to the brain's bounding box plus ``margin_mm``."""
    template = load_template(resolution)
    box = box_around(template.brain, (resolution,) * 3, margin_mm)
    lo = np.array([s.start for s in box])
    affine = template.affine.copy()
    affine[:3, 3] = template.affine[:3, :3] @ lo + template.affine[:3, 3]
    shape = tuple(s.stop - s.start for s in box)
    maps = (template.t1, template.brain, template.gm, template.wm, template.csf)
    return OutputGrid(resolution, affine, shape, *(m[box] for m in maps))  # type: ignore[arg-type]


def params_hash(cfg: PreprocessConfig) -> str:
    """Hash of everything that changes a subject's outputs (parameters, pipeline and ANTs versions)."""
    import ants

    params = asdict(cfg)
    if params["features"] == ["t1"]:  # the default: subjects cached before features existed stay valid
        del params["features"]
    if params["brain_extraction"] == "none":  # as before brain extraction existed
        del params["brain_extraction"]
    payload = {"params": params, "pipeline": PIPELINE_VERSION, "ants": getattr(ants, "__version__", "?")}
    return sha256_json(payload)


def subject_stem(participant_id: str, session_id: str) -> str:
    return participant_id if session_id in ("n/a", "", None) else f"{participant_id}_{session_id}"


def subject_folder(participant_id: str, session_id: str) -> Path:
    base = Path(participant_id)
    return (base if session_id in ("n/a", "", None) else base / session_id) / "anat"


def output_paths(participant_id: str, session_id: str, resolution: float) -> dict[str, Path]:
    """Dataset-relative paths of a subject's derivatives (BIDS entities in every name)."""
    folder = subject_folder(participant_id, session_id)
    stem = subject_stem(participant_id, session_id)
    space = f"space-{SPACE}_res-{res_label(resolution)}"
    return {
        "preproc": folder / f"{stem}_{space}_desc-preproc_T1w.nii.gz",
        "mask": folder / f"{stem}_{space}_desc-brain_mask.nii.gz",
        "sidecar": folder / f"{stem}_{space}_desc-preproc_T1w.json",
        "xfm": folder / f"{stem}_from-T1w_to-{SPACE}_mode-image_xfm.mat",
        "warp": folder / f"{stem}_from-T1w_to-{SPACE}_mode-image_xfm.nii.gz",
        "qc_png": folder / f"{stem}_{space}_desc-qc_T1w.png",
        "native_mask": folder / f"{stem}_desc-brain_mask.nii.gz",
        "gm": folder / f"{stem}_{space}_label-GM_probseg.nii.gz",
        "gm_modulated": folder / f"{stem}_{space}_label-GM_desc-modulated_probseg.nii.gz",
        "logjacobian": folder / f"{stem}_{space}_desc-logjacobian_map.nii.gz",
    }


STATE = ".neurosepclr"  # lock files and exclusion records: bookkeeping, not BIDS derivatives


def lock_path(out: Path, name: str) -> Path:
    return out / STATE / "locks" / f"{name}.lock"


def exclusion_record(out: Path, participant_id: str, session_id: str) -> Path:
    """Where a refused image's record lies (its reason, input path and settings)."""
    return out / STATE / "excluded" / f"{subject_stem(participant_id, session_id)}.json"


MORPHOMETRY = ("gm", "gm_modulated", "logjacobian")
TISSUE_VOLUMES = ("csf_ml", "gm_ml", "wm_ml", "tiv_ml")  # tissue_volumes.tsv, with morphometry


def morphometry_features(cfg: PreprocessConfig) -> list[str]:
    """The morphometry maps ``preprocess.features`` asks for, in its order."""
    return [name for name in cfg.features if name in MORPHOMETRY]


def robust_normalise(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x − median) / IQR inside the brain mask, 0 outside; raises on a flat brain."""
    values = data[mask]
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    if q75 - q25 <= 0:
        raise ValueError("intensities inside the brain mask have no spread")
    return np.where(mask, (data - median) / (q75 - q25), 0.0).astype(np.float32)


def template_correlation(data: np.ndarray, grid: OutputGrid) -> float:
    """Pearson correlation with the template T1 inside the template's brain mask."""
    return float(np.corrcoef(data[grid.brain], grid.t1[grid.brain])[0, 1])


def resample_to_grid(img: nib.Nifti1Image, grid: OutputGrid, order: int = 1) -> np.ndarray:
    """``img`` sampled on ``grid`` through world coordinates (for inputs already in MNI space)."""
    mapping = np.linalg.inv(img.affine) @ grid.affine
    coords = np.indices(grid.shape, dtype=np.float64).reshape(3, -1)
    mapped = mapping[:3, :3] @ coords + mapping[:3, 3:4]
    data = np.asarray(img.dataobj, dtype=np.float32)
    return ndimage.map_coordinates(data, mapped, order=order, mode="constant").reshape(grid.shape)


def _to_ants(img: nib.Nifti1Image, folder: Path, name: str):
    """nibabel → ANTs through a NIfTI file, so ITK applies its own RAS→LPS conventions."""
    import ants

    path = folder / f"{name}.nii.gz"
    nib.save(make_nifti(np.asarray(img.dataobj, dtype=np.float32), img.affine), path)
    return ants.image_read(str(path))


def ants_random_seed(seed: int) -> int:
    """The seed handed to ANTs through ``ANTS_RANDOM_SEED``: ANTsPy 0.6 drops
    ``registration(random_seed=...)``, and ANTs reads 0 as "seed from the clock", so ``seed`` is
    mapped to 1 … 2³¹−1. With one ITK thread per image the registration is then bit-reproducible;
    with several, the Mattes mutual-information sums run in a varying order."""
    return seed % (2**31 - 1) + 1


def register_to_template(
    img: nib.Nifti1Image,
    cfg: PreprocessConfig,
    grid: OutputGrid,
    seed: int,
    work: Path,
    extracted: bool = False,
):
    """N4 + registration with ANTs; returns (data on the grid, list of transform files). With
    ``extracted`` (the image is 0 outside an extracted brain) N4 fits the bias inside the brain."""
    import ants

    moving = _to_ants(img, work, "moving")
    fixed = _to_ants(grid.image(grid.t1), work, "fixed")
    res = cfg.resolution
    if min(moving.spacing) < 0.9 * res:  # work at the analysis resolution: anti-alias, then resample
        sigma = 0.4 * (res - min(moving.spacing))
        moving = ants.resample_image(
            ants.smooth_image(moving, sigma, sigma_in_physical_coordinates=True),
            (res, res, res),
            use_voxels=False,
            interp_type=0,
        )
    if cfg.bias_correction:
        convergence = {"iters": list(cfg.n4_iterations), "tol": 1e-6}
        mask = moving.new_image_like((moving.numpy() > 0).astype("float32")) if extracted else None
        moving = ants.n4_bias_field_correction(
            moving, mask=mask, shrink_factor=cfg.n4_shrink, convergence=convergence
        )
    if cfg.registration == "none":
        warped = ants.resample_image_to_target(moving, fixed, interp_type="linear")
        return warped.numpy(), []
    os.environ["ANTS_RANDOM_SEED"] = str(ants_random_seed(seed))
    reg = ants.registration(
        fixed, moving, type_of_transform=ANTS_TRANSFORMS[cfg.registration], outprefix=str(work / "reg_")
    )
    warped = ants.apply_transforms(fixed, moving, reg["fwdtransforms"], interpolator="linear")
    return warped.numpy(), list(reg["fwdtransforms"])


@contextlib.contextmanager
def temporary_files_in(folder: Path):
    """Send ``tempfile``'s files to ``folder`` (removed with it) while a library call runs."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def tissue_probabilities(warped: np.ndarray, grid: OutputGrid, work: Path) -> dict[str, np.ndarray]:
    """CSF, GM and WM probabilities of a T1w image already on the template grid: ANTs Atropos with
    the template's tissue maps as priors (nilearn ships GM and WM; CSF = brain mask − GM − WM,
    clipped to [0, 1]), prior weight 0.25, MRF smoothing 0.1, 5 iterations, inside the brain mask."""
    import ants

    image = _to_ants(grid.image(warped), work, "segment")
    mask = _to_ants(grid.image(grid.brain, dtype=np.float32), work, "segment_mask")
    priors = [
        _to_ants(grid.image(p), work, f"prior_{n}")
        for n, p in (("csf", grid.csf), ("gm", grid.gm), ("wm", grid.wm))
    ]
    with temporary_files_in(work):  # ANTsPy's atropos writes the priors to the temp dir, never removed
        result = ants.atropos(a=image, x=mask, i=priors, m="[0.1,1x1x1]", c="[5,0]", priorweight=0.25)
    maps = [np.clip(p.numpy(), 0.0, 1.0) * grid.brain for p in result["probabilityimages"]]
    return dict(zip(("csf", "gm", "wm"), maps, strict=True))


def warp_jacobian(transforms: list[str], grid: OutputGrid, work: Path) -> tuple[np.ndarray, float]:
    """(Jacobian determinant of the nonlinear warp on the template grid, |det| of the affine part):
    how much subject volume one template voxel stands for, beyond and by the affine."""
    import ants

    fixed = _to_ants(grid.image(grid.t1), work, "jacobian_domain")
    warp = [t for t in transforms if t.endswith(".nii.gz")]
    jacobian = np.ones(grid.shape, dtype=np.float32)
    if warp:
        jacobian = ants.create_jacobian_determinant_image(fixed, warp[0], do_log=False).numpy()
    matrix = [t for t in transforms if t.endswith(".mat")]
    linear = 1.0
    if matrix:
        parameters = np.asarray(ants.read_transform(matrix[0]).parameters, dtype=float)
        linear = float(abs(np.linalg.det(parameters[:9].reshape(3, 3))))
    return jacobian.astype(np.float32), linear


def morphometry(
    warped: np.ndarray, transforms: list[str], grid: OutputGrid, work: Path
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The morphometry maps on the template grid and the subject's tissue volumes (mL).

    ``gm``: grey-matter probability; ``gm_modulated``: gm × J, with J the Jacobian determinant of
    the nonlinear warp (grey-matter volume per voxel, in template voxels; the affine part, i.e.
    head size, is left out: correct for it with ``tiv_ml``); ``logjacobian``: log J. Volumes sum
    each tissue's probability × J × |det A| × voxel volume: the subject's own volumes.
    """
    tissues = tissue_probabilities(warped, grid, work)
    jacobian, linear = warp_jacobian(transforms, grid, work)
    if (jacobian <= 0).any():
        raise ValueError("the nonlinear warp folds (Jacobian determinant <= 0)")
    maps = {
        "gm": tissues["gm"],
        "gm_modulated": tissues["gm"] * jacobian,
        "logjacobian": np.where(grid.brain, np.log(jacobian), 0.0),
    }
    voxel_ml = grid.resolution**3 / 1000.0
    volumes = {f"{name}_ml": float((p * jacobian).sum() * linear * voxel_ml) for name, p in tissues.items()}
    volumes["tiv_ml"] = volumes["csf_ml"] + volumes["gm_ml"] + volumes["wm_ml"]
    return {name: m.astype(np.float32) for name, m in maps.items()}, {
        key: round(value, 2) for key, value in volumes.items()
    }


def _orthogonal_cuts(shape: tuple[int, ...], centre: tuple[int, ...] | None = None) -> list[tuple]:
    centre = centre or tuple(s // 2 for s in shape)
    every = slice(None)
    return [(centre[0], every, every), (every, centre[1], every), (every, every, centre[2])]


def qc_mosaic(
    data: np.ndarray,
    grid: OutputGrid,
    title: str,
    gm: np.ndarray | None = None,
    native: tuple[np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """PNG: three orthogonal slices of the preprocessed image with the template's brain outline (red)
    and, when segmented, the subject's grey-matter outline (probability 0.5, cyan); with ``native``
    (the input image in RAS voxel order, its brain mask), a first row of the input through the
    mask's centre with the extracted brain's outline (yellow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if native is not None else 1
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3.3 * rows), squeeze=False)
    if native is not None:
        image, mask = native
        centre = tuple(round(c) for c in ndimage.center_of_mass(mask)) if mask.any() else None
        high = float(np.percentile(image, 99.5)) or 1.0
        for ax, cut in zip(axes[0], _orthogonal_cuts(image.shape, centre), strict=True):
            ax.imshow(image[cut].T, origin="lower", cmap="gray", vmin=0.0, vmax=high)
            if mask[cut].any():
                ax.contour(mask[cut].T.astype(float), levels=[0.5], colors="yellow", linewidths=0.6)
            ax.set_axis_off()
    for ax, cut in zip(axes[-1], _orthogonal_cuts(grid.shape), strict=True):
        ax.imshow(data[cut].T, origin="lower", cmap="gray", vmin=-2.5, vmax=2.5)
        ax.contour(grid.brain[cut].T.astype(float), levels=[0.5], colors="red", linewidths=0.6)
        if gm is not None:
            ax.contour(gm[cut].T, levels=[0.5], colors="cyan", linewidths=0.4)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def native_brain_mask(canonical: nib.Nifti1Image, method: str) -> BrainMask:
    """The brain mask of a native image in RAS voxel order (deepbet on CUDA when there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    voxel_mm3 = float(np.prod(canonical.header.get_zooms()[:3]))
    return extract_brain(np.asarray(canonical.dataobj, dtype=np.float32), voxel_mm3, method, device)


def check_image(row: dict, root: Path, cfg: PreprocessConfig) -> str | None:
    """Validate one image; the one-line error, or None when it is fine."""
    try:
        validate_image(root / row["path"], row["participant_id"], row["path"], _policy(cfg))
    except NeurosepclrError as exc:
        return str(exc)
    return None


def _policy(cfg: PreprocessConfig) -> ValidationPolicy:
    return ValidationPolicy(max_voxels=cfg.max_voxels, max_nonfinite_fraction=cfg.max_nonfinite_fraction)


def required_outputs(cfg: PreprocessConfig) -> tuple[str, ...]:
    """The :func:`output_paths` keys a subject preprocessed with ``cfg`` must have on disk."""
    extracted = ("native_mask",) if cfg.brain_extraction != "none" else ()
    return ("preproc", "mask", "qc_png", *extracted, *morphometry_features(cfg))


def _read_json(path: Path) -> dict | None:
    """A JSON record, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def process_subject(row: dict, root: Path, out: Path, cfg: PreprocessConfig, seed: int, phash: str) -> dict:
    """Preprocess one image (or reuse its cached outputs); returns its QC row."""
    pid, session = row["participant_id"], row["session_id"]
    paths = output_paths(pid, session, cfg.resolution)
    source = root / row["path"]
    input_hash = sha256_file(source)
    sidecar = out / paths["sidecar"]
    meta = _read_json(sidecar) if sidecar.is_file() else None
    if meta and meta.get("InputSHA256") == input_hash and meta.get("ParamsSHA256") == phash:
        if all((out / paths[k]).is_file() for k in required_outputs(cfg)):
            return {**meta["QC"], **meta.get("TissueVolumes", {}), "cached": True}

    grid = analysis_grid(cfg.resolution, cfg.crop_margin_mm)
    validated = validate_image(source, pid, row["path"], _policy(cfg))
    canonical = nib.as_closest_canonical(validated.to_nifti())
    brain, brain_warnings, moving = None, [], canonical
    if cfg.brain_extraction != "none":
        brain = native_brain_mask(canonical, cfg.brain_extraction)
        brain_warnings = check_brain(brain, np.asarray(canonical.dataobj), pid, row["path"])
        moving = nib.Nifti1Image(np.asarray(canonical.dataobj) * brain.mask, canonical.affine)
        moving = moving.slicer[box_around(brain.mask, moving.header.get_zooms()[:3], BRAIN_BOX_MARGIN_MM)]
    with tempfile.TemporaryDirectory(prefix="neurosepclr-") as tmp:
        work = Path(tmp)
        warped, transforms = register_to_template(moving, cfg, grid, seed, work, extracted=brain is not None)
        try:
            normalised = robust_normalise(warped, grid.brain)
        except ValueError as exc:
            raise InputDataError(f"{pid}: {row['path']}: after registration, {exc}") from None
        correlation = template_correlation(normalised, grid)
        qc = {
            "participant_id": pid,
            "session_id": session,
            "template_correlation": round(correlation, 4),
            "qc_pass": bool(correlation >= cfg.qc_min_correlation) and not brain_warnings,
            "brain_mask_ml": round(brain.volume_ml, 1) if brain is not None else "n/a",
            "nonfinite_voxels": validated.nonfinite_voxels,
            "warnings": " | ".join(validated.warnings + brain_warnings) or "n/a",
        }
        maps, volumes = {}, {}
        written = morphometry_features(cfg)
        if written:
            try:
                maps, volumes = morphometry(warped, transforms, grid, work)
            except ValueError as exc:
                raise InputDataError(f"{pid}: {row['path']}: morphometry failed: {exc}") from None
        atomic_write_bytes(out / paths["preproc"], nifti_gz_bytes(grid.image(normalised)))
        for name in written:
            atomic_write_bytes(out / paths[name], nifti_gz_bytes(grid.image(maps[name])))
        atomic_write_bytes(out / paths["mask"], nifti_gz_bytes(grid.image(grid.brain, dtype=np.uint8)))
        if brain is not None:  # native space: the input's grid in RAS voxel order (as fMRIPrep's T1w space)
            mask_img = nib.Nifti1Image(brain.mask.astype(np.uint8), canonical.affine)
            atomic_write_bytes(out / paths["native_mask"], nifti_gz_bytes(mask_img))
        for transform in transforms:
            key = "xfm" if transform.endswith(".mat") else "warp"
            atomic_write_bytes(out / paths[key], Path(transform).read_bytes())
        title = f"{subject_stem(pid, session)}  r={correlation:.3f}  {'PASS' if qc['qc_pass'] else 'FAIL'}"
        native = (np.asarray(canonical.dataobj), brain.mask) if brain is not None else None
        mosaic = qc_mosaic(normalised, grid, title, maps.get("gm"), native)
        atomic_write_bytes(out / paths["qc_png"], mosaic)
    meta = {
        "Sources": [f"bids:raw:{row['path']}"],
        "SpatialReference": SPACE,
        "Resolution": f"{cfg.resolution:g} mm",
        "BrainExtraction": cfg.brain_extraction,
        "Registration": cfg.registration,
        "BiasCorrection": "N4" if cfg.bias_correction else "none",
        "IntensityNormalisation": "(x - median) / IQR within the template brain mask",
        "InputSHA256": input_hash,
        "ParamsSHA256": phash,
        "PipelineVersion": PIPELINE_VERSION,
        "Transforms": [paths["xfm" if t.endswith(".mat") else "warp"].name for t in transforms],
        "Features": {name: paths[name].name for name in written},
        "TissueVolumes": volumes,
        "QC": qc,
    }
    atomic_write_text(sidecar, json.dumps(meta, indent=2) + "\n")  # last: marks the subject complete
    return {**qc, **volumes, "cached": False}


def write_exclusion(out: Path, row: dict, reason: str, phash: str) -> None:
    """Record that ``row``'s image was refused (with ``--skip-bad``) under the settings ``phash``."""
    record = {
        "participant_id": row["participant_id"],
        "session_id": row["session_id"],
        "path": row["path"],
        "reason": reason,
        "ParamsSHA256": phash,
    }
    atomic_write_text(
        exclusion_record(out, row["participant_id"], row["session_id"]), json.dumps(record, indent=2) + "\n"
    )


def process_or_refuse(
    row: dict, root: Path, out: Path, cfg: PreprocessConfig, seed: int, phash: str, skip_bad: bool
) -> dict:
    """:func:`process_subject` under the subject's lock (a second process handed the same subject
    waits, then finds it cached); with ``skip_bad`` an image refused while processing (no brain in
    it, morphometry failing) is recorded and comes back as ``{"refused": message}`` instead of
    stopping the cohort."""
    pid, session = row["participant_id"], row["session_id"]
    with file_lock(lock_path(out, subject_stem(pid, session))):
        try:
            result = process_subject(row, root, out, cfg, seed, phash)
        except InputDataError as exc:
            if not skip_bad:
                raise
            write_exclusion(out, row, str(exc), phash)
            return {"refused": str(exc)}
        exclusion_record(out, pid, session).unlink(missing_ok=True)
    return result


def check_output_dir(out: Path) -> None:
    """Refuse an output folder that holds files but is not a neurosepclr derivatives folder (a
    re-run into our own folder updates it; anything else would be mixed with our outputs)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out} is a file, not a folder; choose a folder for the derivatives")
    held = sorted(p.name for p in out.iterdir() if p.name not in {"logs", ".neurosepclr.lock", STATE})
    if not held:
        return
    try:
        description = json.loads((out / "dataset_description.json").read_text(encoding="utf-8"))
        ours = any(g.get("Name") == "neurosepclr" for g in description.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        ours = False
    if not ours:
        shown = ", ".join(held[:3]) + (", …" if len(held) > 3 else "")
        raise OutputError(
            f"{out} holds other files ({shown}) and is not a neurosepclr derivatives folder; "
            "choose a new or empty folder"
        )


@contextlib.contextmanager
def settings_guard(out: Path, phash: str):
    """Hold this process's settings lock (shared with processes of the same settings) and refuse
    to start while a process with other settings works in ``out`` (exit 75): one folder, one set of
    settings at a time. Each process takes its own lock before looking for others, so of two
    processes started at once with different settings at least one sees the other."""
    own = lock_path(out, f"settings-{phash[:16]}")
    with file_lock(own, shared=True):
        others = sorted(p for p in own.parent.glob("settings-*.lock") if p != own)
        busy = [p.stem.removeprefix("settings-") for p in others if is_locked(p)]
        if busy:
            raise TemporaryFailure(
                f"{out} is being preprocessed by another process with different settings (params "
                f"{busy[0]}…, these are {phash[:16]}…); give every process the same config, or another folder"
            )
        yield


def preprocess(
    cohort: CohortTable,
    out_dir: str | Path,
    config: Config,
    n_jobs: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Preprocess every image of ``cohort`` into the derivatives folder ``out_dir``, then rebuild
    the folder's group tables (:func:`write_group_tables`); returns qc.tsv (every subject of the
    folder, not only these)."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    cfg = config.preprocess
    out = Path(out_dir)
    require("ants", "preprocess", "neurosepclr preprocess")
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = cohort.frame.to_dict(orient="records")
    threads = max(1, (os.cpu_count() or 1) // max(1, n_jobs))
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(threads))

    checks = Parallel(n_jobs=n_jobs)(
        delayed(check_image)(r, cohort.root, cfg)
        for r in tqdm(rows, desc="validate", unit="image", disable=not progress)
    )
    failures = [(r, msg) for r, msg in zip(rows, checks, strict=True) if msg is not None]
    if failures and not skip_bad:
        first = failures[0][1]
        more = f" ({len(failures)} of {len(rows)} images failed validation; --skip-bad excludes them)"
        raise InputDataError(first + (more if len(failures) > 1 else ""))
    good = [r for r, msg in zip(rows, checks, strict=True) if msg is None]
    if rows and not good:
        raise InputDataError("no image passed validation; nothing to preprocess")

    phash = params_hash(cfg)
    _write_description(out, cohort.root, cfg)  # first: marks the folder as ours for other processes
    with settings_guard(out, phash):
        for row, message in failures:
            log.warning("excluded: %s", message)
            write_exclusion(out, row, message, phash)
        if cfg.needs_warp():
            log.info("preprocess.features %s need the nonlinear warp: registering with SyN", cfg.features)
        jobs = (
            delayed(process_or_refuse)(r, cohort.root, out, cfg, config.seed, phash, skip_bad) for r in good
        )
        results = []
        for row, result in zip(
            good,
            tqdm(
                Parallel(n_jobs=n_jobs, return_as="generator")(jobs),
                total=len(good),
                desc="preprocess",
                unit="image",
                disable=not progress,
            ),
            strict=True,
        ):
            if "refused" in result:  # only with --skip-bad: no brain found, registration failed, ...
                log.warning("excluded: %s", result["refused"])
                failures.append((row, result["refused"]))
            else:
                results.append(result)
        if rows and not results:
            raise InputDataError(
                f"no image could be preprocessed ({len(failures)} refused; the first: {failures[0][1]})"
            )
        cached = sum(bool(r["cached"]) for r in results)
        log.info(
            "preprocessed %d image(s), %d reused from cache, %d excluded",
            len(results) - cached,
            cached,
            len(failures),
        )
        return write_group_tables(out, cohort.root, config, cohort.mapping)


def recorded_participants(out: Path) -> list[str]:
    """Participants with a record in the derivatives folder (a sidecar or an exclusion record)."""
    found = {p.name.split("_")[0] for p in out.glob("sub-*/**/anat/sub-*_desc-preproc_T1w.json")}
    found |= {p.stem.split("_")[0] for p in (out / STATE / "excluded").glob("sub-*.json")}
    return sorted(found)


def write_group_tables(out: Path, root: Path, config: Config, mapping: GroupMapping) -> pd.DataFrame:
    """Rebuild ``cohort.tsv``, ``qc.tsv``, ``excluded.tsv`` and ``tissue_volumes.tsv`` from the
    per-subject records written with the current settings (the group step: reads JSON, never an
    image), under the folder's group lock so the last writer has seen every record; returns qc.tsv.
    Records of other settings are left out (logged); images of ``root`` without a record are not yet
    preprocessed (logged)."""
    cfg = config.preprocess
    phash = params_hash(cfg)
    with file_lock(lock_path(out, "group")):
        listed = set(read_participants(root / "participants.tsv")["participant_id"].dropna())
        labels = [pid for pid in recorded_participants(out) if pid in listed]
        if not labels:
            raise InputDataError(f"{out}: no preprocessed subject of {root} found; nothing to tabulate")
        cohort = build_cohort(root, mapping, labels)
        results, excluded, other_settings, missing = [], [], [], []
        for row in cohort.frame.to_dict(orient="records"):
            pid, session = row["participant_id"], row["session_id"]
            paths = output_paths(pid, session, cfg.resolution)
            refused = _read_json(exclusion_record(out, pid, session))
            meta = _read_json(out / paths["sidecar"])
            if refused and refused.get("ParamsSHA256") == phash and refused.get("path") == row["path"]:
                excluded.append({k: refused[k] for k in ("participant_id", "session_id", "path", "reason")})
            elif (
                meta
                and meta.get("ParamsSHA256") == phash
                and meta.get("Sources") == [f"bids:raw:{row['path']}"]
                and all((out / paths[k]).is_file() for k in required_outputs(cfg))
            ):
                results.append({**meta["QC"], **meta.get("TissueVolumes", {})})
            elif meta or refused:
                other_settings.append(subject_stem(pid, session))
            else:
                missing.append(subject_stem(pid, session))
        if other_settings:
            log.warning(
                "%d image(s) preprocessed with other settings left out of the group tables (%s%s); "
                "preprocess them again with these settings",
                len(other_settings),
                ", ".join(other_settings[:3]),
                ", …" if len(other_settings) > 3 else "",
            )
        if not results:
            raise InputDataError(
                f"{out}: no subject preprocessed with these settings (params {phash[:16]}…); give the "
                "group step the config of the participant-level runs"
            )
        excluded_table = pd.DataFrame(excluded, columns=["participant_id", "session_id", "path", "reason"])
        qc = pd.DataFrame(results)
        volume_columns = [c for c in TISSUE_VOLUMES if c in qc.columns]
        volumes = qc[["participant_id", "session_id", *volume_columns]] if volume_columns else None
        qc = qc.drop(columns=volume_columns)
        _write_dataset_files(out, cohort, config, qc, excluded_table, volumes)
    waiting = len(listed - set(labels)) + len({m.split("_")[0] for m in missing})
    log.info(
        "group tables of %s: %d image(s), %d excluded; %d participant(s) of %s without outputs yet",
        out,
        len(qc),
        len(excluded_table),
        waiting,
        root,
    )
    return qc


COVARIATES = ("age", "sex", "site")


def kept_columns(cohort: CohortTable, config: Config) -> list[str]:
    """Columns of participants.tsv carried into cohort.tsv: keys, group, the covariates neurosepclr
    uses, and those named in ``loss.metadata`` / ``loss.attributes``. Any other column (a name, a
    record number) never reaches an output file."""
    wanted = ["participant_id", "session_id", "path", "group", "group_label", cohort.mapping.column]
    wanted += [*COVARIATES, *config.loss.metadata, *config.loss.attributes]
    return [c for c in dict.fromkeys(wanted) if c in cohort.frame.columns]


def _write_description(out: Path, root: Path, cfg: PreprocessConfig) -> None:
    atomic_write_text(
        out / "dataset_description.json",
        json.dumps(
            {
                "Name": "neurosepclr preprocessed T1w",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {
                        "Name": "neurosepclr",
                        "Version": __version__,
                        "Description": f"neurosepclr preprocess ({cfg.registration} registration to {SPACE}, "
                        f"{cfg.resolution:g} mm)",
                    }
                ],
                "SourceDatasets": [{"URL": root.resolve().as_uri()}],
            },
            indent=2,
        )
        + "\n",
    )


def _write_dataset_files(
    out: Path,
    cohort: CohortTable,
    config: Config,
    qc: pd.DataFrame,
    excluded: pd.DataFrame,
    volumes: pd.DataFrame | None,
) -> None:
    cfg = config.preprocess
    grid = analysis_grid(cfg.resolution, cfg.crop_margin_mm)
    atomic_write_bytes(
        out / f"tpl-{SPACE}_res-{res_label(cfg.resolution)}_T1w.nii.gz", nifti_gz_bytes(grid.image(grid.t1))
    )
    atomic_write_bytes(
        out / f"tpl-{SPACE}_res-{res_label(cfg.resolution)}_desc-brain_mask.nii.gz",
        nifti_gz_bytes(grid.image(grid.brain, dtype=np.uint8)),
    )
    table = cohort.frame[kept_columns(cohort, config)].merge(
        qc[["participant_id", "session_id", "template_correlation", "qc_pass"]],
        on=["participant_id", "session_id"],
        how="inner",
    )
    table.insert(
        3,
        "preproc",
        [
            output_paths(p, s, cfg.resolution)["preproc"].as_posix()
            for p, s in zip(table["participant_id"], table["session_id"], strict=True)
        ],
    )
    keys = list(zip(table["participant_id"], table["session_id"], strict=True))
    for position, name in enumerate(morphometry_features(cfg)):
        table.insert(
            4 + position, name, [output_paths(p, s, cfg.resolution)[name].as_posix() for p, s in keys]
        )
    atomic_write_text(out / "cohort.tsv", tsv_text(table))
    if volumes is not None:
        atomic_write_text(out / "tissue_volumes.tsv", tsv_text(volumes))
    elif (out / "tissue_volumes.tsv").exists():  # from an earlier run with morphometry features
        (out / "tissue_volumes.tsv").unlink()
    atomic_write_text(out / "qc.tsv", tsv_text(qc))
    if len(excluded):
        atomic_write_text(out / "excluded.tsv", tsv_text(excluded))
    elif (out / "excluded.tsv").exists():
        (out / "excluded.tsv").unlink()
    atomic_write_text(out / "preprocess.yaml", dump_config(config))
