"""Validation of one T1w NIfTI before any processing.

nibabel reads headers lazily and allocates what the header claims before it decodes compressed
data, so sizes are capped *before* loading; every image is then decoded in full so that a
truncated file fails here, naming the subject, rather than hours later in a data-loader worker.
Nothing is silently "fixed": NaN/Inf voxels above a threshold, constant images, degenerate affines
and absurd voxel sizes are errors; the few repairs allowed (a singleton 4th axis, a handful of
non-finite voxels, qform/sform disagreement) are warnings recorded in ``qc.tsv``.

Policy for qform/sform disagreement: the sform is used (as nibabel, ANTs and FSL do when its code
is set); a disagreement above 1 mm anywhere in the field of view is reported as a warning.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from neurosepclr.errors import InputDataError, MissingInputError


@dataclass(frozen=True)
class ValidationPolicy:
    """Limits applied to every input image."""

    max_voxels: int = 512 * 512 * 512
    max_header_offset: int = 1_000_000
    max_nonfinite_fraction: float = 1e-4
    min_voxel_mm: float = 0.2
    max_voxel_mm: float = 8.0
    max_affine_disagreement_mm: float = 1.0


@dataclass
class ValidatedImage:
    """A decoded 3D image (float32), its affine and the warnings raised while validating it."""

    data: np.ndarray
    affine: np.ndarray
    warnings: list[str] = field(default_factory=list)
    nonfinite_voxels: int = 0

    def to_nifti(self) -> nib.Nifti1Image:
        return nib.Nifti1Image(self.data, self.affine)


def _fail(label: str, relpath: str, reason: str) -> InputDataError:
    return InputDataError(f"{label}: {relpath}: {reason}")


GZIP_MIN_BYTES = 18  # 10-byte header + 8-byte trailer


def _check_data_offset(offset: int, label: str, relpath: str, policy: ValidationPolicy) -> None:
    if offset > policy.max_header_offset:
        raise _fail(label, relpath, f"header extensions of {offset} bytes exceed {policy.max_header_offset}")


def _declared_data_offset(path: Path, is_gz: bool) -> tuple[int | None, str]:
    """(``vox_offset`` read from the raw first bytes, problem): NIfTI-1 or -2, either byte order,
    before nibabel reads any extension. Offset None: not a NIfTI header (nibabel then says why)."""
    try:
        with gzip.open(path, "rb") if is_gz else path.open("rb") as handle:
            raw = handle.read(540)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return None, f"truncated or corrupt gzip stream ({_short(exc)})"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or _short(exc)})"
    for order in ("<", ">"):
        if len(raw) >= 348 and struct.unpack(f"{order}i", raw[:4])[0] == 348:
            value = struct.unpack(f"{order}f", raw[108:112])[0]
            return (int(value) if math.isfinite(value) else None), ""
        if len(raw) >= 540 and struct.unpack(f"{order}i", raw[:4])[0] == 540:
            return int(struct.unpack(f"{order}q", raw[168:176])[0]), ""
    return None, ""


def _gzip_declared_size(path: Path) -> int | None:
    """Uncompressed size mod 2³² from the gzip trailer (ISIZE), or None if not a gzip file."""
    with path.open("rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return None
        if path.stat().st_size < GZIP_MIN_BYTES:
            return 0
        handle.seek(-4, 2)
        return struct.unpack("<I", handle.read(4))[0]


def validate_image(
    path: str | Path, label: str, relpath: str | None = None, policy: ValidationPolicy = ValidationPolicy()
) -> ValidatedImage:
    """Load and check one T1w image; raise :class:`InputDataError` naming ``label`` and ``relpath``."""
    path = Path(path)
    relpath = relpath or path.name
    if not path.is_file():
        raise MissingInputError(f"{label}: {relpath}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise _fail(label, relpath, "empty file")
    is_gz = path.name.endswith(".gz")
    declared = _gzip_declared_size(path)
    if declared is not None and size < GZIP_MIN_BYTES:
        raise _fail(label, relpath, f"truncated gzip file ({size} bytes)")
    if is_gz and declared is None:
        raise _fail(label, relpath, "named .nii.gz but not gzip-compressed (rename it to .nii)")
    if not is_gz and declared is not None:
        raise _fail(label, relpath, "gzip-compressed but named .nii (rename it to .nii.gz)")

    offset, problem = _declared_data_offset(path, is_gz)
    if problem:
        raise _fail(label, relpath, problem)
    if offset is not None:  # refused before nibabel reads the extensions into memory
        _check_data_offset(offset, label, relpath, policy)
    try:
        img = nib.load(str(path))
    except (
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
        struct.error,
    ) as exc:
        reason = _short(exc).replace(str(path), relpath)  # never an absolute path in a message
        raise _fail(label, relpath, f"not a readable NIfTI header ({reason})") from None

    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise _fail(label, relpath, f"not a NIfTI image ({type(img).__name__})")
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    warnings: list[str] = []
    if offset is None:  # the raw bytes did not say: take nibabel's reading of the header
        offset = int(header.get("vox_offset", 0))
        _check_data_offset(offset, label, relpath, policy)
    if len(shape) == 4 and shape[3] == 1:
        warnings.append(f"4D image with one volume {shape}: used as 3D")
        shape = shape[:3]
    elif len(shape) != 3:
        raise _fail(label, relpath, f"expected a 3D image, got shape {shape}")
    if min(shape) < 2:
        raise _fail(label, relpath, f"degenerate shape {shape}")
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > policy.max_voxels:
        raise _fail(
            label,
            relpath,
            f"header declares {shape} = {n_voxels} voxels, above the limit of {policy.max_voxels}",
        )
    expected_bytes = offset + n_voxels * header.get_data_dtype().itemsize
    available = declared if is_gz else size
    if available is not None and expected_bytes < 2**32 and available < expected_bytes:
        raise _fail(
            label,
            relpath,
            f"truncated: the header needs {expected_bytes} bytes of data, the file holds {available}",
        )

    affine = _checked_affine(img, label, relpath, policy, warnings)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, MemoryError) as exc:
        raise _fail(
            label, relpath, f"image data cannot be decoded, truncated or corrupt ({_short(exc)})"
        ) from None

    nonfinite = int(np.count_nonzero(~np.isfinite(data)))
    if nonfinite:
        fraction = nonfinite / n_voxels
        if fraction > policy.max_nonfinite_fraction:
            raise _fail(
                label,
                relpath,
                f"{nonfinite} NaN/Inf voxels ({fraction:.2%}), above the limit of "
                f"{policy.max_nonfinite_fraction:.2%}",
            )
        warnings.append(f"{nonfinite} NaN/Inf voxels set to 0")
        data = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
    low, high = float(data.min()), float(data.max())
    if high == low:
        what = "all zeros" if high == 0 else f"constant ({high:g})"
        raise _fail(label, relpath, f"image is {what}")
    return ValidatedImage(data, affine, warnings, nonfinite)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _checked_affine(
    img, label: str, relpath: str, policy: ValidationPolicy, warnings: list[str]
) -> np.ndarray:
    header = img.header
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        affine = img.get_sform()
    elif qform_code > 0:
        affine = img.get_qform()
    else:
        raise _fail(label, relpath, "no spatial orientation (qform_code and sform_code are both 0)")
    if not np.all(np.isfinite(affine)):
        raise _fail(label, relpath, "affine holds NaN or Inf")
    linear = affine[:3, :3]
    if abs(np.linalg.det(linear)) < 1e-6 or np.linalg.cond(linear) > 1e4:
        raise _fail(label, relpath, "affine is singular (zero or degenerate voxel axes)")
    zooms = np.sqrt((linear**2).sum(axis=0))
    if zooms.min() < policy.min_voxel_mm or zooms.max() > policy.max_voxel_mm:
        shown = "×".join(f"{z:.3g}" for z in zooms)
        raise _fail(
            label, relpath, f"voxel size {shown} mm outside {policy.min_voxel_mm}–{policy.max_voxel_mm} mm"
        )
    if sform_code > 0 and qform_code > 0:
        corners = np.array(
            [
                [i, j, k, 1]
                for i in (0, img.shape[0] - 1)
                for j in (0, img.shape[1] - 1)
                for k in (0, img.shape[2] - 1)
            ],
            dtype=float,
        ).T
        gap = np.abs(img.get_sform() @ corners - img.get_qform() @ corners)[:3].max()
        if gap > policy.max_affine_disagreement_mm:
            warnings.append(f"qform and sform disagree by up to {gap:.1f} mm: the sform is used")
    return affine
