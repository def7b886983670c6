"""What does the recipe's encoder learn when it is *given* the labels? A supervised ceiling.

The salient encoder is asked to find, without labels, what separates patients from controls and
patients from one another. This script trains the same encoder (``model.*`` of the config: network,
widths, pooling) on the same inputs (``train.pool``, ``train.input_norm`` against the
training controls), the same random views (``train.augment``), batch size, learning rate and
precision, with the labels instead, followed by one linear layer and a class-balanced
cross-entropy:

- ``--target diagnosis``: patients vs controls, every training subject;
- ``--target subtype``: the true subtypes, training patients only.

It scores the subjects of the run's validation split (``stratified_split`` with ``--split-seed``:
the held-out subjects of ``salient_sweep.py --set train.split_seed=...``) every ``--eval-every``
steps: balanced accuracy (and, for subtypes, ARI). ``last`` is the final step; ``max`` the best
evaluation, which peeks at the held-out labels and is therefore optimistic.

If the encoder trained *with* labels does not generalise to held-out subjects, the salient space of
the same encoder trained without them is not expected to: the limit is then the data (cohort size,
effect size) and the architecture, not the contrastive objective.

    python benchmarks/supervised_ceiling.py DERIVATIVES TRUTH OUT.tsv --config pipelines/subtypes-cpu.yaml \\
        [--set k=v ...] [--target diagnosis|subtype] [--steps 300] [--seeds 0 1 2] [--split-seed 0]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scoring
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score

from neurosepclr.compute import autocast_factory, resolve_precision
from neurosepclr.config import load_config
from neurosepclr.data.truth import load_truth
from neurosepclr.models.encoders import build_encoder
from neurosepclr.training.data import (
    control_reference,
    load_derivatives,
    normalise_to_reference,
    stratified_split,
)
from neurosepclr.training.loop import step_generator
from neurosepclr.training.views import apply_view, draw_view_params, intensity_channels


def supervised_run(x, labels, train_rows, held_rows, cfg, steps, eval_every, seed) -> list[dict]:
    """Train encoder + linear layer on ``train_rows``; held-out scores at every evaluation."""
    torch.manual_seed(seed)
    n_classes = int(labels.max()) + 1
    encoder = build_encoder(cfg.model.encoder, cfg.model.salient_dim, cfg.model.widths, cfg.model.pool_cells)
    net = nn.Sequential(encoder, nn.ReLU(), nn.Linear(cfg.model.salient_dim, n_classes))
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    optimiser = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    autocast = autocast_factory(
        resolve_precision(cfg.train.precision, torch.device("cpu")), torch.device("cpu")
    )
    counts = np.bincount(labels[train_rows], minlength=n_classes)
    weight = torch.tensor(len(train_rows) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    y = torch.from_numpy(labels)
    rng = np.random.default_rng(seed)
    intensity = intensity_channels(cfg.data.features, cfg.train.augment.intensity_features)
    rows = []
    for step in range(1, steps + 1):
        net.train()
        batch = torch.from_numpy(
            rng.choice(train_rows, min(cfg.train.batch_size, len(train_rows)), replace=False)
        )
        params = draw_view_params(len(batch), cfg.train.augment, step_generator(seed, step))
        view = apply_view(x[batch], params, cfg.train.augment, intensity)
        if cfg.train.channels_last:
            view = view.contiguous(memory_format=torch.channels_last_3d)
        with autocast():
            loss = F.cross_entropy(net(view).float(), y[batch], weight=weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % eval_every == 0 or step == steps:
            net.eval()
            with torch.no_grad(), autocast():
                predicted = torch.cat([net(chunk).float() for chunk in x[held_rows].split(64)])
            predicted = predicted.argmax(1).numpy()
            truth = labels[held_rows]
            rows.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "heldout_bacc": balanced_accuracy_score(truth, predicted),
                    "heldout_ari": adjusted_rand_score(truth, predicted),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives")
    parser.add_argument("truth")
    parser.add_argument("out", help="TSV; one row per seed is appended")
    parser.add_argument("--config", default="pipelines/subtypes-cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--target", choices=("diagnosis", "subtype"), default="diagnosis")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--label", default="", help="free text for the TSV's label column")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)

    data = load_derivatives(args.derivatives, cfg.train.pool)
    truth = load_truth(args.truth)
    subtype = scoring.subtype_labels(data.table, truth.table)
    split = stratified_split(
        data.table["group"], cfg.train.val_fraction, args.split_seed, data.table["participant_id"]
    )
    patients = data.is_target.numpy()
    train_mask = split == "train"
    x = data.volumes
    if cfg.train.input_norm != "none":
        mean, spread = control_reference(x, torch.from_numpy(train_mask & ~patients))
        x = normalise_to_reference(x, mean, spread)
    if args.target == "diagnosis":
        labels = patients.astype(np.int64)
        keep = np.ones(len(labels), dtype=bool)
    else:
        keep = patients
        labels = np.full(len(keep), -1, dtype=np.int64)
        labels[keep] = pd.factorize(subtype[keep], sort=True)[0]
    train_rows = np.flatnonzero(train_mask & keep)
    held_rows = np.flatnonzero(~train_mask & keep)

    records = []
    for seed in args.seeds:
        start = time.perf_counter()
        history = supervised_run(x, labels, train_rows, held_rows, cfg, args.steps, args.eval_every, seed)
        seconds = time.perf_counter() - start
        last, best = history[-1], max(history, key=lambda r: r["heldout_bacc"])
        record = {
            "label": args.label,
            "target": args.target,
            "seed": seed,
            "split_seed": args.split_seed,
            "n_train": len(train_rows),
            "n_heldout": len(held_rows),
            "last_heldout_bacc": round(last["heldout_bacc"], 3),
            "last_heldout_ari": round(last["heldout_ari"], 3),
            "max_heldout_bacc": round(best["heldout_bacc"], 3),
            "max_step": best["step"],
            "trajectory_bacc": " ".join(f"{r['heldout_bacc']:.2f}" for r in history),
            "overrides": " ".join(args.overrides),
            "seconds": round(seconds, 1),
            "machine": platform.node() or "unknown",
        }
        records.append(record)
        print(record, flush=True)
    out = Path(args.out)
    frame = pd.DataFrame(records)
    frame.to_csv(out, sep="\t", index=False, mode="a", header=not out.is_file())


if __name__ == "__main__":
    main()
