"""Brain extraction on simulated whole heads: mask quality, seconds, and what it does to registration.

One cohort is simulated twice with the same seed, as whole heads (default) and as brain-only images
(``--brain-only``): the same subjects, brains and scanner geometry. Then, on one core per command
(ITK, torch and BLAS limited to one thread, one job):

* ``deepbet`` on the heads: Dice of the native brain mask against the simulator's true mask,
  seconds of the extraction alone (the networks on one image), and the whole ``preprocess``;
* ``none`` on the heads: today's pipeline before brain extraction existed (should fail visibly);
* ``none`` on the brain-only images: the reference registration quality.

Registration quality is ``qc.tsv``'s ``template_correlation`` (correlation with the template inside
its brain mask after registration). Prints one table.

    python benchmarks/brain_extraction.py OUT_DIR [--subjects 12] [--resolution 2] [--seed 0]
        [--registration affine]
    python benchmarks/brain_extraction.py OUT_DIR --precision   deepbet in fp32 vs bf16 on the heads
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ONE_THREAD = {
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def neurosepclr(*argv: str) -> float:
    """Run one command on one thread; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "neurosepclr", "--quiet", *argv], check=True, env={**os.environ, **ONE_THREAD}
    )
    return time.perf_counter() - start


def simulate(out: Path, n: int, resolution: float, seed: int, *extra: str) -> Path:
    if not (out / "participants.tsv").is_file():
        controls, patients = n - 3 * (n // 6), n // 6
        neurosepclr(
            "simulate", str(out), "--n-controls", str(controls), "--n-patients-per-subtype", str(patients),
            "--resolution", str(resolution), "--seed", str(seed), *extra,
        )  # fmt: skip
    return out


def heads_with_truth(bids: Path):
    """(participant_id, image in RAS voxel order as float32, true brain mask) per simulated head."""
    import nibabel as nib
    import numpy as np

    for image_path in sorted(bids.glob("sub-*/anat/*_T1w.nii.gz")):
        pid = image_path.name.split("_")[0]
        data = nib.as_closest_canonical(nib.load(image_path)).get_fdata(dtype=np.float32)
        truth_path = bids / "derivatives" / "truth" / pid / "anat" / f"{pid}_desc-brain_mask.nii.gz"
        yield pid, data, np.asarray(nib.as_closest_canonical(nib.load(truth_path)).dataobj) > 0


def dice(mask, truth) -> float:
    return float(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))


def extraction_scores(bids: Path) -> tuple[list[float], list[float]]:
    """(Dice against the true mask, seconds of deepbet alone) per subject, on one thread."""
    import torch

    from neurosepclr.data.brain_extraction import extract_brain, load_deepbet

    torch.set_num_threads(1)
    load_deepbet("cpu")  # loading (hash check included) is paid once per worker, not per image
    scores, seconds = [], []
    for _, data, truth in heads_with_truth(bids):
        start = time.perf_counter()
        brain = extract_brain(data, 1.0, "deepbet")
        seconds.append(time.perf_counter() - start)
        scores.append(dice(brain.mask, truth))
    return scores, seconds


def compare_precision(bids: Path) -> None:
    """deepbet with bf16 autocast (what preprocess uses on CPUs with bf16 instructions) vs fp32:
    seconds and Dice per head, alternating, one thread."""
    from unittest import mock

    import torch

    from neurosepclr.data import brain_extraction

    torch.set_num_threads(1)
    brain_extraction.load_deepbet("cpu")
    print("participant_id  fp32_s  bf16_s  fp32_dice  bf16_dice  masks_differ_voxels")
    for pid, data, truth in heads_with_truth(bids):
        seconds, masks = [], []
        for bf16 in (False, True):
            with mock.patch.object(brain_extraction, "native_cpu_bf16", lambda bf16=bf16: bf16):
                start = time.perf_counter()
                masks.append(brain_extraction.extract_brain(data, 1.0, "deepbet").mask)
                seconds.append(time.perf_counter() - start)
        scores = [dice(m, truth) for m in masks]
        changed = int((masks[0] != masks[1]).sum())
        print(f"{pid}  {seconds[0]:.2f}  {seconds[1]:.2f}  {scores[0]:.4f}  {scores[1]:.4f}  {changed}")


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--registration", default="affine")
    parser.add_argument("--precision", action="store_true", help="only compare deepbet in fp32 and bf16")
    args = parser.parse_args()
    import numpy as np
    import pandas as pd

    heads = simulate(args.out / "heads", args.subjects, args.resolution, args.seed)
    if args.precision:
        compare_precision(heads)
        return
    brains = simulate(args.out / "brains", args.subjects, args.resolution, args.seed, "--brain-only")
    dice_scores, bet_seconds = extraction_scores(heads)
    rows = []
    for name, bids, extraction in (
        ("heads, deepbet", heads, "deepbet"),
        ("heads, none (no extraction)", heads, "none"),
        ("brain-only, none", brains, "none"),
    ):
        deriv = args.out / f"deriv_{bids.name}_{extraction}"
        seconds = neurosepclr(
            "preprocess", str(bids), str(deriv), "--resolution", str(args.resolution), "--n-jobs", "1",
            "--brain-extraction", extraction, "--registration", args.registration,
        )  # fmt: skip
        qc = pd.read_csv(deriv / "qc.tsv", sep="\t")
        r = qc["template_correlation"]
        extracted = extraction == "deepbet"
        rows.append(
            {
                "pipeline": name,
                "mask_dice_mean": round(float(np.mean(dice_scores)), 3) if extracted else np.nan,
                "mask_dice_min": round(float(np.min(dice_scores)), 3) if extracted else np.nan,
                "extraction_s_per_image": round(float(np.mean(bet_seconds)), 2) if extracted else 0,
                "preprocess_s_per_image": round(seconds / len(qc), 1),
                "template_corr_mean": round(float(r.mean()), 3),
                "template_corr_min": round(float(r.min()), 3),
                "qc_pass": f"{int(qc['qc_pass'].sum())}/{len(qc)}",
            }
        )
    table = pd.DataFrame(rows)
    res = f"{args.resolution:g}"
    print(f"# {args.subjects} subjects, simulate --resolution {res} --seed {args.seed} (native geometry),")
    print(f"# preprocess --resolution {res} --registration {args.registration}, one thread per command;")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
