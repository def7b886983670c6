"""Seed ensemble by concatenation: held-out subtype ARI of each seed's salient space and of all seeds'
salient coordinates concatenated (runs of one sweep folder, trained with the same ``train.split_seed``).

    python benchmarks/seed_concat.py SWEEP_OUT TRUTH

k-means (K = true K, :class:`SalientSubtyper`) fitted on training patients, held-out patients by
``predict``; "all" scores every patient with the same fit. Each line gives both standardisations:
over the training patients, whitened against the training controls (``subtype.standardise``), and
also clustering unit-length deviations (``subtype.directions``).
"""

import argparse
from pathlib import Path

import numpy as np
import scoring

from neurosepclr.data.truth import load_truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="salient_sweep.py OUT folder (run folders NAME_seedN)")
    parser.add_argument("truth", type=Path)
    args = parser.parse_args()
    runs = sorted(args.sweep.glob("*_seed*"))
    frames = [scoring.read_embeddings(run / "embeddings.tsv") for run in runs]
    split = frames[0]["split"].to_numpy()
    if not all((frame["split"].to_numpy() == split).all() for frame in frames):
        raise SystemExit(
            "the runs have different train/validation splits: train them with one train.split_seed"
        )
    subtype = scoring.subtype_labels(frames[0], load_truth(args.truth).table)
    patients, train = scoring.roles(frames[0])
    k = scoring.true_k(subtype, patients)
    spaces = {run.name: scoring.coordinates(frame) for run, frame in zip(runs, frames, strict=True)}
    spaces["concatenated"] = np.hstack(list(spaces.values()))
    for name, x in spaces.items():
        for _, standardise, directions in scoring.STANDARDISATIONS:
            ari = scoring.held_out_subtype_ari(
                x, subtype, patients, train, k, standardise=standardise, directions=directions
            )
            label = standardise + (" + directions" if directions else "")
            print(f"{name} ({label}): held-out ARI {ari['held_out']:.3f}, all patients {ari['all']:.3f}")


if __name__ == "__main__":
    main()
