"""Seed ensemble by concatenation: held-out subtype ARI of each seed's salient space and of all seeds'
salient coordinates concatenated (runs of one sweep folder, trained with the same ``train.split_seed``).

    python benchmarks/seed_concat.py SWEEP_OUT TRUTH

k-means (K = true K, :class:`SalientSubtyper`) fitted on training patients, held-out patients by
``predict``; "all" scores every patient with the same fit. Each line gives both standardisations:
over the training patients, whitened against the training controls (``subtype.standardise``), and
also clustering unit-length deviations (``subtype.directions``).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.evaluate import load_truth
from neurosepclr.analysis.subtyping import SalientSubtyper


def main() -> None:
    sweep, truth_dir = Path(sys.argv[1]), sys.argv[2]
    truth = load_truth(truth_dir).table[["participant_id", "subtype"]]
    runs = sorted(sweep.glob("*_seed*"))
    frames = [pd.read_csv(run / "embeddings.tsv", sep="\t", dtype={"participant_id": str}) for run in runs]
    split = frames[0]["split"].to_numpy()
    if not all((frame["split"].to_numpy() == split).all() for frame in frames):
        raise SystemExit(
            "the runs have different train/validation splits: train them with one train.split_seed"
        )
    table = frames[0].merge(truth, on="participant_id", how="left")
    patients = table["group"].to_numpy() == "target"
    train, held = patients & (split == "train"), patients & (split == "val")
    controls = ~patients & (split == "train")
    k = table.loc[patients, "subtype"].nunique()
    spaces = {
        run.name: frame.filter(regex=r"^salient_\d+$").to_numpy()
        for run, frame in zip(runs, frames, strict=True)
    }
    spaces["concatenated"] = np.hstack(list(spaces.values()))
    for name, x in spaces.items():
        for standardise, directions in (("patients", False), ("controls", False), ("controls", True)):
            model = SalientSubtyper(k, standardise=standardise, directions=directions, random_state=0)
            model.fit(x[train], reference=x[controls])
            standardise += " + directions" if directions else ""
            held_ari = adjusted_rand_score(table["subtype"][held], model.predict(x[held]))
            all_ari = adjusted_rand_score(table["subtype"][patients], model.predict(x[patients]))
            print(f"{name} ({standardise}): held-out ARI {held_ari:.3f}, all patients {all_ari:.3f}")


if __name__ == "__main__":
    main()
