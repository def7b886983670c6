"""How separable are a simulated cohort's subtypes? Reference rows for the salient-space ablations.

Three numbers on a preprocessed simulated cohort:

- **oracle ARI**: k-means / GMM (K = true K) on each patient's mean intensity inside each true
  subtype territory (z-scored against controls). It knows *where* the atrophy is, so it is an upper
  reference for any unsupervised method that summarises regions; its Cohen's d per territory is printed.
  Also with the patients' vectors scaled to unit length (*directions*: which territories, not how
  severe, as ``subtype.directions`` clusters the salient space).
- **contrastive PCA** on voxel z-maps (against training controls) of the training grid, every
  (α, components, joint PCA size) of a small grid, k-means on patients: best and median ARI; and
  the same with each patient's projection taken from the training controls' mean and scaled to unit
  length (directions).
- **supervised subtype probe** (logistic regression on the same z-maps, fitted on training patients,
  scored on held-out patients): is the subtype information present at all at this resolution?
- **patient-vs-control ceilings**: balanced accuracy of a logistic probe on the oracle territory
  means and on the z-maps (fitted on training subjects, scored on held-out ones): what a salient
  diagnosis probe can hope for on this cohort.

    python benchmarks/separability.py DERIVATIVES TRUTH [--pool 3] [--seed 0]
"""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score
from sklearn.mixture import GaussianMixture

from neurosepclr.analysis.baselines import ContrastivePCA
from neurosepclr.analysis.evaluate import _resample_like, load_truth
from neurosepclr.training.data import (
    control_reference,
    load_derivatives,
    normalise_to_reference,
    stratified_split,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives")
    parser.add_argument("truth")
    parser.add_argument("--pool", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = load_truth(args.truth)

    full = load_derivatives(args.derivatives, 1)
    patients = full.is_target.numpy()
    subtype = full.table[["participant_id"]].merge(truth.table, on="participant_id", how="left")["subtype"]
    subtype = subtype.to_numpy()
    reference = nib.Nifti1Image(full.volumes[0, 0].numpy(), full.affine)
    features = []
    for mask in truth.masks.values():
        inside = _resample_like(mask, reference, order=0) > 0.5
        features.append(full.volumes[:, 0][:, torch.from_numpy(inside)].mean(dim=1).numpy())
    x = np.column_stack(features)
    z = (x - x[~patients].mean(axis=0)) / x[~patients].std(axis=0)
    for column, name in enumerate(truth.masks):
        effects = {s: round(float(z[patients & (subtype == s), column].mean()), 2) for s in truth.masks}
        print(f"territory {name}: mean z of each true subtype {effects}")
    k = len(truth.masks)
    oracle_km = adjusted_rand_score(
        subtype[patients], KMeans(k, n_init=20, random_state=args.seed).fit_predict(z[patients])
    )
    oracle_gmm = adjusted_rand_score(
        subtype[patients], GaussianMixture(k, n_init=10, random_state=args.seed).fit_predict(z[patients])
    )
    print(f"oracle ARI (territory means, all patients): k-means {oracle_km:.3f}, GMM {oracle_gmm:.3f}")
    unit = z[patients] / np.linalg.norm(z[patients], axis=1, keepdims=True)
    oracle_dir = adjusted_rand_score(
        subtype[patients], KMeans(k, n_init=20, random_state=args.seed).fit_predict(unit)
    )
    print(f"oracle ARI, directions (unit-length territory z vectors): k-means {oracle_dir:.3f}")

    data = load_derivatives(args.derivatives, args.pool)
    split = stratified_split(data.table["group"], 0.2, args.seed, data.table["participant_id"])
    train = split == "train"
    mean, spread = control_reference(data.volumes, torch.from_numpy(train) & ~data.is_target)
    maps = normalise_to_reference(data.volumes, mean, spread).reshape(len(data), -1).numpy()
    scores, direction_scores = [], []
    for alpha in (1.0, 3.0, 10.0, 100.0):
        for n_components in (2, 5):
            for n_joint in (20, 60, 150):
                model = ContrastivePCA(n_components, alpha, n_joint).fit(maps[train], patients[train])
                projected = model.transform(maps[patients])
                labels = KMeans(k, n_init=10, random_state=args.seed).fit_predict(projected)
                scores.append((adjusted_rand_score(subtype[patients], labels), alpha, n_components, n_joint))
                deviation = projected - model.transform(maps[train & ~patients]).mean(axis=0)
                deviation /= np.maximum(np.linalg.norm(deviation, axis=1, keepdims=True), 1e-12)
                labels = KMeans(k, n_init=10, random_state=args.seed).fit_predict(deviation)
                direction_scores.append(
                    (adjusted_rand_score(subtype[patients], labels), alpha, n_components, n_joint)
                )
    for name, grid in (("", scores), (", directions from the controls' mean", direction_scores)):
        best = max(grid)
        print(
            f"contrastive PCA on control z-maps (pool {args.pool}){name}, all patients: best ARI "
            f"{best[0]:.3f} (alpha {best[1]}, {best[2]} components, joint PCA {best[3]}), median over "
            f"the {len(grid)}-point grid {np.median([s[0] for s in grid]):.3f}"
        )
    probe = LogisticRegression(C=0.01, max_iter=3000).fit(maps[patients & train], subtype[patients & train])
    held = patients & ~train
    accuracy = balanced_accuracy_score(subtype[held], probe.predict(maps[held]))
    print(f"supervised subtype probe on z-maps, held-out patients: balanced accuracy {accuracy:.3f}")
    full_split = (
        stratified_split(full.table["group"], 0.2, args.seed, full.table["participant_id"]) == "train"
    )
    oracle_dx = LogisticRegression(max_iter=3000).fit(z[full_split], patients[full_split])
    dx_oracle = balanced_accuracy_score(patients[~full_split], oracle_dx.predict(z[~full_split]))
    voxel_dx = LogisticRegression(C=0.01, max_iter=3000).fit(maps[train], patients[train])
    dx_voxels = balanced_accuracy_score(patients[~train], voxel_dx.predict(maps[~train]))
    print(
        f"patient-vs-control probes, held-out subjects: oracle territory means {dx_oracle:.3f}, "
        f"z-maps {dx_voxels:.3f}"
    )


if __name__ == "__main__":
    main()
