"""Where one training step's time goes: the host-side data work (gathering the batch from the
cache, drawing and applying the two views) against the network's own forward + loss + backward +
Adam update, on the same views. The network part is the ceiling the data path cannot beat.

Each part is timed separately with the training loop's own functions (``two_views``, the model, the
SepCLR loss), in rounds, and the medians are reported with the share of the step.

    python benchmarks/step_profile.py --grid 26 32 27        # 6 mm training grid
    python benchmarks/step_profile.py --grid 78 96 81        # 2 mm
    python benchmarks/step_profile.py --grid 78 96 81 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from neurosepclr.config import load_config
from neurosepclr.models import build_model
from neurosepclr.objectives import SepCLRLoss
from neurosepclr.training.loop import step_generator, two_views
from neurosepclr.training.sampler import balanced_batch
from neurosepclr.training.views import intensity_channels


def timed(function, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", type=int, nargs=3, default=[26, 32, 27])
    parser.add_argument("--n", type=int, default=256, help="subjects in the cache")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = load_config(None, [])
    augment = config.train.augment
    volumes = torch.randn(args.n, 1, *args.grid)  # the cache stays on the host, as in train
    is_target = (torch.arange(args.n) % 2 == 1).numpy()
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    loss_fn = SepCLRLoss()
    intensity = intensity_channels(config.data.features, augment.intensity_features)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    parts: dict[str, list[float]] = {"gather + views (host side)": [], "network fwd + loss + bwd + Adam": []}
    for step in range(args.rounds + 1):  # the first round warms up and is discarded
        batch = balanced_batch(is_target, args.batch, 0.5, step, 0)
        local = np.arange(len(batch))

        def data_part(batch=batch, local=local, step=step):
            return two_views(
                volumes, batch, local, augment, intensity, step_generator(0, step), device, False
            )

        views, data_seconds = timed(data_part, device)
        targets = torch.from_numpy(is_target[batch]).to(device)

        def network_part(views=views, targets=targets):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(views)
            c1, c2 = out.common_proj.float().chunk(2)
            s1, s2 = out.salient_proj.float().chunk(2)
            terms = loss_fn(c1, c2, s1, s2, targets)
            optimizer.zero_grad()
            terms.total.backward()
            optimizer.step()

        _, network_seconds = timed(network_part, device)
        if step:
            parts["gather + views (host side)"].append(data_seconds)
            parts["network fwd + loss + bwd + Adam"].append(network_seconds)
    medians = {name: statistics.median(values) for name, values in parts.items()}
    total = sum(medians.values())
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {where}; {args.precision}"
    )
    print(f"grid {tuple(args.grid)}, batch {args.batch} (x2 views), light_cnn, {args.rounds} rounds")
    for name, median in medians.items():
        print(f"{name:34s} {median:7.3f} s  {100 * median / total:5.1f} %")
    ceiling = 2 * args.batch / medians["network fwd + loss + bwd + Adam"]
    print(f"{'step':34s} {total:7.3f} s {2 * args.batch / total:6.1f} views/s (network alone {ceiling:.1f})")


if __name__ == "__main__":
    main()
