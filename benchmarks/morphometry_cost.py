"""Preprocessing cost of the morphometry features, side by side with today's T1w pipeline.

Per subject, alternating the two variants so that machine noise hits both alike, one
``neurosepclr preprocess`` process each, on one core (ITK and BLAS limited to one thread, one job):

* ``t1-affine``: ``--features t1`` (N4, affine registration, intensity normalisation: the default);
* ``morphometry-syn``: ``--features t1 gm gm_modulated logjacobian`` (the same, SyN, Atropos with the
  template's priors, the warp's Jacobian, tissue volumes).

Reports seconds per subject (wall time of the whole command, start-up included) and the ratio.

    python benchmarks/morphometry_cost.py BIDS_DIR [--resolution 2] [--subjects N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "t1-affine": ["--features", "t1"],
    "morphometry-syn": ["--features", "t1", "gm", "gm_modulated", "logjacobian"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bids", type=Path)
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--subjects", type=int, default=6)
    args = parser.parse_args()
    subjects = sorted(p.name for p in args.bids.glob("sub-*"))[: args.subjects]
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1"}
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for subject in subjects:
            for name, flags in VARIANTS.items():
                out = Path(tmp) / name
                command = [
                    sys.executable,
                    "-m",
                    "neurosepclr",
                    "--quiet",
                    "preprocess",
                    str(args.bids),
                    str(out),
                ]
                command += [
                    "--resolution",
                    f"{args.resolution:g}",
                    "--participant-label",
                    subject,
                    "--n-jobs",
                    "1",
                ]
                started = time.perf_counter()
                subprocess.run([*command, *flags], check=True, env=env, capture_output=True)
                seconds[name].append(time.perf_counter() - started)
                print(f"{subject} {name} {seconds[name][-1]:.1f} s", flush=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one core per command"
    )
    for name, values in seconds.items():
        print(
            f"{name:16s} mean {statistics.mean(values):6.1f} s per subject "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )
    ratios = [m / t for m, t in zip(seconds["morphometry-syn"], seconds["t1-affine"], strict=True)]
    print(f"morphometry-syn / t1-affine: mean {statistics.mean(ratios):.2f}x (per subject, side by side)")


if __name__ == "__main__":
    main()
