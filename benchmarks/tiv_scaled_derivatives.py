"""A copy of a derivatives folder whose modulated grey matter is proportionally scaled by TIV.

Proportional scaling ("global normalisation" of SPM's VBM) divides each subject's modulated grey
matter by its total intracranial volume (``tissue_volumes.tsv``), times 1500 mL, so that head size
no longer scales every voxel. The copy links every other file to the original (nothing is rewritten
there) and is trained like any derivatives folder:

    python benchmarks/tiv_scaled_derivatives.py DERIV DERIV_TIV
    neurosepclr train DERIV_TIV RUN --config pipelines/subtypes-cpu.yaml --set "data.features=[gm_modulated]"

Result (volume-loss default cohort, 2026-12-03): benchmarks/README.md, "The volume-loss cohort".
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from neurosepclr.io import read_tsv

REFERENCE_TIV_ML = 1500.0


def linked_copy(source: Path, target: Path) -> None:
    """Group files copied, subject files linked (absolute symlinks)."""
    target.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.is_dir() and entry.name.startswith("sub-"):
            for path in sorted(entry.rglob("*")):
                if path.is_file():
                    link = target / path.relative_to(source)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(path.resolve())
        elif entry.is_dir():
            shutil.copytree(entry, target / entry.name)
        else:
            shutil.copy2(entry, target / entry.name)


def scale_modulated_grey_matter(folder: Path) -> int:
    """Replace each linked ``gm_modulated`` map by a scaled file; returns the number of maps."""
    keys = ["participant_id", "session_id"]  # one TIV per image: sessions of a participant differ
    volumes = read_tsv(folder / "tissue_volumes.tsv")[[*keys, "tiv_ml"]]
    images = read_tsv(folder / "cohort.tsv").merge(volumes, on=keys, how="left", validate="one_to_one")
    if images["tiv_ml"].isna().any():
        missing = images.loc[images["tiv_ml"].isna(), "participant_id"].tolist()
        raise SystemExit(f"{folder / 'tissue_volumes.tsv'}: no TIV for {', '.join(missing)}")
    for relative, tiv_ml in zip(images["gm_modulated"], images["tiv_ml"], strict=True):
        path = folder / relative
        image = nib.load(path)
        scaled = np.asarray(image.dataobj, dtype=np.float32) * np.float32(REFERENCE_TIV_ML / tiv_ml)
        path.unlink()  # the link, not the original
        nib.save(nib.Nifti1Image(scaled, image.affine, image.header), path)
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "derivatives", type=Path, help="output of neurosepclr preprocess --features gm_modulated"
    )
    parser.add_argument("out", type=Path, help="new folder (must not exist)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists")
    linked_copy(args.derivatives, args.out)
    print(f"scaled {scale_modulated_grey_matter(args.out)} modulated grey-matter maps into {args.out}")


if __name__ == "__main__":
    main()
