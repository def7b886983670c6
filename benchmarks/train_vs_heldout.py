"""Do training patients sit worse in the representation than held-out ones? (issue 21)

    python benchmarks/train_vs_heldout.py RUN_SEED0 RUN_SEED1 ... --truth TRUTH --k K --out OUT.tsv

For each run's salient space (subtype's standardisation: whitened by the training controls, unit
directions) and for contrastive PCA of the first run's inputs at every ``subtype.cpca_alphas``, two
scores on the training patients and on the held-out patients separately:

* ``nearest_true_mean_ari``: every patient assigned to the nearest *true* subtype mean (means of
  the training patients): what a centroid clustering could reach at best;
* ``kmeans_ari``: the subtyper fitted on the training patients, as ``subtype`` does.

Contrastive PCA is the control: it is fitted on the same training patients, so a gap between
training and held-out patients that it shows too comes from the split, not from the encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import scoring
import torch
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.consensus import run_subtyper
from neurosepclr.analysis.subtype import embed
from neurosepclr.config import SubtypeConfig
from neurosepclr.data.truth import load_truth
from neurosepclr.training.inference import load_run


def nearest_true_mean(coordinates: np.ndarray, truth: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Index of the nearest true subtype mean (means over the ``fitted`` rows) for every row."""
    names = sorted(set(truth[fitted]))
    means = np.stack([coordinates[fitted & (truth == name)].mean(axis=0) for name in names])
    return np.argmin(((coordinates[:, None] - means[None]) ** 2).sum(axis=2), axis=1)


def split_scores(space, settings: SubtypeConfig, k: int, truth: np.ndarray) -> dict:
    model = run_subtyper(space, k, settings, seed=0)
    nearest = nearest_true_mean(model.standardised(space.salient), truth, space.fit_rows)
    found = model.predict(space.salient)
    held_out = space.is_target & (space.split != "train")
    row = {}
    for part, rows in (("train", space.fit_rows), ("heldout", held_out)):
        row[f"{part}_nearest_true_mean_ari"] = adjusted_rand_score(truth[rows], nearest[rows])
        row[f"{part}_kmeans_ari"] = adjusted_rand_score(truth[rows], found[rows])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders, one per seed, same split")
    parser.add_argument("--truth", type=Path, required=True, help="derivatives/truth of the simulated cohort")
    parser.add_argument("--k", type=int, required=True, help="the true number of subtypes")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = SubtypeConfig(k=args.k)
    torch.set_grad_enabled(False)
    truth_table = load_truth(args.truth).table
    rows, first, truth = [], None, None
    for folder in args.runs:
        run = load_run(folder, args.checkpoint)
        space = embed(run, torch.device("cpu"), None if first is None else first.data)
        if first is None:  # every later run is embedded on the first one's data, in its order
            first = space
            merged = first.data.table[["participant_id"]].merge(truth_table, on="participant_id", how="left")
            truth = merged["subtype"].fillna("control").astype(str).to_numpy()
        rows.append({"representation": "sepclr", "detail": f"seed {run.config.seed}"})
        rows[-1] |= split_scores(space, settings, args.k, truth)
        print(rows[-1])
    for alpha, linear in scoring.cpca_at_each_alpha(first, settings):
        rows.append({"representation": "cpca", "detail": f"alpha {alpha:g}"})
        rows[-1] |= split_scores(linear, settings, args.k, truth)
        print(rows[-1])
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False, float_format="%.4f")
    print(table.groupby("representation").mean(numeric_only=True).round(2).to_string())


if __name__ == "__main__":
    main()
