"""Private builders of tiny NIfTI files and BIDS folders for tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: Path, data=None, affine=None, shape=(8, 9, 10), seed=0) -> Path:
    """A small valid NIfTI (random positive intensities, 2 mm RAS affine unless given)."""
    if data is None:
        data = np.random.default_rng(seed).uniform(10, 100, shape).astype(np.float32)
    if affine is None:
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
    img = nib.Nifti1Image(data, None)
    if abs(np.linalg.det(affine[:3, :3])) > 1e-9:  # NIfTI cannot store a singular qform
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None, code=0)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_bids(
    root: Path, rows: list[tuple[str, str]], images=None, sessions=None, header="participant_id\tdiagnosis"
) -> Path:
    """participants.tsv with ``rows`` (id, group) and one T1w per subject (or the ``images`` given)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [header] + ["\t".join(r) for r in rows]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for pid in images if images is not None else [r[0] for r in rows]:
        for session in sessions or [None]:
            folder = root / pid / (session or "") / "anat"
            stem = f"{pid}_{session}" if session else pid
            write_nifti(folder / f"{stem}_T1w.nii.gz")
    return root
