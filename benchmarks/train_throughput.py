"""Training-step throughput, side by side (CPU or GPU): the conventional per-sample MONAI fp32 data
path vs our batched on-device views, in fp32, bf16 autocast and channels_last_3d.

One full step = two views of a balanced batch, both encoders and heads forward, the SepCLR loss,
backward and the Adam update, exactly as in ``neurosepclr train``. Variants alternate in rounds so
machine noise hits them alike; the median seconds per step of each is reported with the ratio to
fp32.

    python benchmarks/train_throughput.py DERIVATIVES [--pool 3] [--batch 32] [--rounds 5] [--steps 4]
    python benchmarks/train_throughput.py --grid 78 96 81 --device cuda --encoder resnet18
    python benchmarks/train_throughput.py DERIVATIVES --scaling 50 100 250

``--grid`` times random volumes of that shape instead of a cohort (speed does not depend on content;
78×96×81 is the cropped 2 mm MNI grid of ``preprocess``). With a cohort, the conventional baseline
also runs *without caching* (``monai-per-sample fp32, no cache``: every sample of every step read
from its NIfTI file by MONAI's ``LoadImage``, pooled and z-scored, then augmented), which is what
a plain MONAI training script does. ``--scaling`` runs that baseline and our fastest CPU setting,
each in a fresh process, on the first N subjects for each N, and reports seconds per step and the
process's peak resident memory: how both scale with the number of subjects.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from neurosepclr.config import load_config
from neurosepclr.models import build_model
from neurosepclr.objectives import SepCLRLoss
from neurosepclr.training.data import TARGET, load_derivatives, read_cohort_table
from neurosepclr.training.sampler import balanced_batch
from neurosepclr.training.views import make_views

VARIANTS = {  # name: (autocast dtype, channels_last_3d, view generation)
    "monai-per-sample fp32, no cache": (None, False, "monai-disk"),
    "monai-per-sample fp32": (None, False, "monai"),
    "fp32": (None, False, "batched"),
    "bf16": (torch.bfloat16, False, "batched"),
    "fp32+channels_last": (None, True, "batched"),
    "bf16+channels_last": (torch.bfloat16, True, "batched"),
}


BASELINE = "monai-per-sample fp32"
UNCACHED = "monai-per-sample fp32, no cache"
SCALING = (UNCACHED, "bf16+channels_last")


def load_uncached(paths: list[Path], pool: int) -> torch.Tensor:
    """The deterministic part redone for every sample, as without a cache: read the preprocessed
    NIfTI with MONAI's ``LoadImage``, pool to the training grid, z-score the image."""
    from monai.transforms import LoadImage, NormalizeIntensity

    from neurosepclr.training.data import pool_volume

    load, normalise = LoadImage(image_only=True), NormalizeIntensity()
    images = [torch.from_numpy(np.asarray(load(str(p)), dtype=np.float32)) for p in paths]
    return torch.stack([normalise(pool_volume(image, pool)) for image in images]).as_subclass(torch.Tensor)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def monai_views(volumes: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The conventional data path: MONAI array transforms applied sample by sample on the host
    (affine, bias field, intensity scale and shift, noise: the same kinds and ranges as ours)."""
    import math

    from monai.transforms import (
        Compose,
        RandAffine,
        RandBiasField,
        RandGaussianNoise,
        RandScaleIntensity,
        RandShiftIntensity,
    )

    transform = Compose(
        [
            RandAffine(
                prob=1.0,
                rotate_range=(math.radians(6),) * 3,
                scale_range=(0.05,) * 3,
                translate_range=(2,) * 3,
                padding_mode="zeros",
            ),
            RandBiasField(prob=1.0, coeff_range=(0.0, 0.1)),
            RandScaleIntensity(factors=0.2, prob=1.0),
            RandShiftIntensity(offsets=0.2, prob=1.0),
            RandGaussianNoise(prob=1.0, std=0.1),
        ]
    )
    transform.set_random_state(seed)
    cpu = volumes.cpu()
    views = [torch.stack([torch.as_tensor(transform(x)) for x in cpu]) for _ in range(2)]
    return views[0].to(volumes.device), views[1].to(volumes.device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("derivatives", nargs="?")
    parser.add_argument("--grid", type=int, nargs=3, help="random volumes of this shape instead")
    parser.add_argument("--n", type=int, default=96, help="subjects of the random cohort")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="light_cnn")
    parser.add_argument("--pool", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="time only these variants")
    parser.add_argument("--scaling", type=int, nargs="+", metavar="N", help="cohort sizes to compare")
    args = parser.parse_args()
    if args.scaling:
        scaling(args)
        return
    cfg = load_config(None, [f"model.encoder={args.encoder}"])
    device = torch.device(args.device)
    variants = {
        name: spec
        for name, spec in VARIANTS.items()
        if (not args.only or name in args.only) and (not args.grid or spec[2] != "monai-disk")
    }
    if args.grid:
        volumes = torch.randn(args.n, 1, *args.grid)
        is_target_t = torch.arange(args.n) % 2 == 1
        paths = []
    else:
        table = read_cohort_table(args.derivatives)
        paths = [Path(args.derivatives) / p for p in table["preproc"]]
        is_target_t = torch.tensor((table["group"] == TARGET).to_numpy(dtype=bool))
        cached = any(generation != "monai-disk" for _, _, generation in variants.values())
        volumes = load_derivatives(args.derivatives, args.pool).volumes if cached else None  # the cache
    volumes = volumes.to(device) if volumes is not None else None
    is_target = is_target_t.numpy()
    loss_fn = SepCLRLoss()
    models, optimizers = {}, {}
    for name, (_, channels_last, _) in variants.items():
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device)
        models[name] = model.to(memory_format=torch.channels_last_3d) if channels_last else model
        optimizers[name] = torch.optim.Adam(models[name].parameters(), lr=3e-4)
    times = {name: [] for name in variants}
    step = 0
    for _ in range(args.rounds + 1):  # the first round warms up and is discarded
        for name, (dtype, channels_last, generation) in variants.items():
            model, optimizer = models[name], optimizers[name]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                batch = balanced_batch(is_target, args.batch, 0.5, step, 0)
                if generation == "monai-disk":
                    v1, v2 = monai_views(load_uncached([paths[i] for i in batch], args.pool), step)
                elif generation == "monai":
                    v1, v2 = monai_views(volumes[batch], step)
                else:
                    v1, v2, _, _ = make_views(
                        volumes[batch], cfg.train.augment, torch.Generator().manual_seed(step)
                    )
                views = torch.cat([v1, v2])
                if channels_last:
                    views = views.contiguous(memory_format=torch.channels_last_3d)
                context = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                with context:
                    out = model(views)
                c1, c2 = out.common_proj.float().chunk(2)
                s1, s2 = out.salient_proj.float().chunk(2)
                terms = loss_fn(c1, c2, s1, s2, is_target_t[batch].to(device))
                optimizer.zero_grad()
                terms.total.backward()
                optimizer.step()
                step += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / args.steps)
    for name in times:
        times[name] = times[name][1:]
    medians = {name: statistics.median(values) for name, values in times.items()}
    bases = {
        label: medians[name]
        for label, name in (("no cache", UNCACHED), ("cached", BASELINE))
        if name in medians
    }
    grid = tuple(volumes.shape[2:]) if volumes is not None else f"pool {args.pool}"
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{args.encoder}, grid {grid}, {len(is_target)} subjects, batch {args.batch} (x2 views), {where}")
    print("speed-up = MONAI per-sample fp32 s/step (no cache; cached) / variant s/step")
    for name, median in medians.items():
        ratios = "  ".join(f"{base / median:4.2f}x vs {label}" for label, base in bases.items())
        print(
            f"{name:32s} {median:6.3f} s/step  {2 * args.batch / median:6.1f} views/s  {ratios}  "
            f"(spread {np.ptp(times[name]):.3f} s)"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def scaling(args) -> None:
    """Each of ``SCALING`` in a fresh process per cohort size: s/step and peak RSS against N.

    The first N subjects are a derivatives folder of their own (a ``cohort.tsv`` of N rows pointing
    at the original images), so a process reads only what a cohort of N would hold."""
    import tempfile

    table = read_cohort_table(args.derivatives)
    table["preproc"] = [str((Path(args.derivatives) / p).resolve()) for p in table["preproc"]]
    options = ["--pool", str(args.pool), "--batch", str(args.batch), "--rounds", str(args.rounds)]
    options += ["--steps", str(args.steps), "--encoder", args.encoder]
    print(f"{'variant':32s} {'subjects':>8s} {'s/step':>8s} {'peak RSS MB':>12s}")
    for n in args.scaling:
        with tempfile.TemporaryDirectory(prefix=f"first{n}-") as folder:
            subset = Path(folder)
            table.head(n).to_csv(subset / "cohort.tsv", sep="\t", index=False)
            for name in SCALING:
                result = subprocess.run(
                    [sys.executable, __file__, str(subset), *options, "--only", name],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                lines = result.stdout.splitlines()
                seconds = next(line for line in lines if line.startswith(name)).split()[len(name.split())]
                rss = lines[-1].split()[2]
                print(f"{name:32s} {n:8d} {float(seconds):8.3f} {float(rss):12.0f}", flush=True)


if __name__ == "__main__":
    main()
