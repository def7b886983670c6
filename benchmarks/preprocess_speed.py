"""Preprocessing speed, memory and registration quality: neurosepclr vs the default ANTs pipeline.

Baseline ("ants-default"): N4 with ANTsPy defaults on the full-resolution image, then
``ants.registration(type_of_transform="Affine")`` against the 1 mm MNI152 2009a template, then the
result resampled onto the analysis grid. Ours ("neurosepclr"): the `preprocess` pipeline (work at
the analysis resolution: anti-aliased resampling, N4 with shrink 4 and 3×30 iterations, ANTs
``Affine`` against the template at the analysis resolution).

Quality for both: Pearson correlation with the template T1 inside the template's brain mask, on the
same 2 mm analysis grid, after the same robust normalisation. Each method runs in its own
subprocess per subject (peak RSS measured there), alternating methods subject by subject so that
machine noise hits both alike.

    python benchmarks/preprocess_speed.py BIDS_DIR [--resolution 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(method: str, image: Path, resolution: float) -> dict:
    """Process one image with one method in this process; returns seconds, correlation, peak RSS."""
    import ants
    import nibabel as nib
    import numpy as np

    from neurosepclr.config import PreprocessConfig
    from neurosepclr.data.preprocess import (
        analysis_grid,
        register_to_template,
        robust_normalise,
        template_correlation,
    )
    from neurosepclr.data.template import load_template, make_nifti
    from neurosepclr.data.validate import validate_image

    work = Path(tempfile.mkdtemp())

    def ants_image(img: nib.Nifti1Image, name: str):
        """``img`` as ANTs reads it from a NIfTI file (ITK applies its own RAS→LPS conventions)."""
        nib.save(make_nifti(np.asarray(img.dataobj, dtype=np.float32), img.affine), work / f"{name}.nii.gz")
        return ants.image_read(str(work / f"{name}.nii.gz"))

    grid = analysis_grid(resolution, 4.0)
    full = load_template(1.0)
    fixed_grid = ants_image(grid.image(grid.t1), "grid")
    fixed_1mm = ants_image(full.image(full.t1), "tpl1mm")
    start = time.perf_counter()
    canonical = nib.as_closest_canonical(validate_image(image, image.name).to_nifti())
    if method == "neurosepclr":
        warped, _ = register_to_template(canonical, PreprocessConfig(resolution=resolution), grid, 0, work)
    else:
        moving = ants.n4_bias_field_correction(ants_image(canonical, "moving"))
        reg = ants.registration(fixed_1mm, moving, type_of_transform="Affine", random_seed=0)
        warped = ants.apply_transforms(
            fixed_grid, moving, reg["fwdtransforms"], interpolator="linear"
        ).numpy()
    seconds = time.perf_counter() - start
    correlation = template_correlation(robust_normalise(np.asarray(warped), grid.brain), grid)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "image": image.name,
        "seconds": seconds,
        "correlation": correlation,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bids", type=Path)
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]), args.resolution)))
        return
    images = sorted(args.bids.glob("sub-*/anat/*_T1w.nii.gz"))
    results = []
    for image in images:
        for method in ("ants-default", "neurosepclr"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    str(args.bids),
                    "--resolution",
                    str(args.resolution),
                    "--threads",
                    str(args.threads),
                    "--one",
                    method,
                    str(image),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    import pandas as pd

    frame = pd.DataFrame(results)
    summary = frame.groupby("method").agg(
        seconds=("seconds", "mean"),
        correlation=("correlation", "mean"),
        peak_rss_mb=("peak_rss_mb", "max"),
        n=("image", "count"),
    )
    paired = frame.pivot(index="image", columns="method", values=["seconds", "correlation"])
    speedup = paired["seconds"]["ants-default"] / paired["seconds"]["neurosepclr"]
    gap = paired["correlation"]["neurosepclr"] - paired["correlation"]["ants-default"]
    print(summary.round(3).to_string())
    print(
        f"speed-up (per image, ants-default / neurosepclr): mean {speedup.mean():.1f}x, "
        f"min {speedup.min():.1f}x"
    )
    print(
        f"correlation difference (neurosepclr - ants-default): mean {gap.mean():+.4f}, worst {gap.min():+.4f}"
    )


if __name__ == "__main__":
    main()
