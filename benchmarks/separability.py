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
- **best-case oracle and supervised ceilings**: the territory means weighted by the template's
  grey-matter probability and adjusted for age, sex, site and global intensity by a regression
  fitted on controls (W-scores), clustered as above; then what a *supervised* logistic probe reaches
  on those features (5-fold cross-validated predictions): subtype ARI, and patient-vs-control
  balanced accuracy with the features' minimum added (a patient is low in *one* territory). No
  unsupervised method is expected above these numbers on the same cohort.

    python benchmarks/separability.py DERIVATIVES TRUTH [--pool 3] [--seed 0]
"""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import pandas as pd
import scoring
import torch
from nibabel.processing import resample_from_to
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import cross_val_predict

from neurosepclr.analysis.baselines import ContrastivePCA
from neurosepclr.data.template import load_template
from neurosepclr.data.truth import load_truth
from neurosepclr.training.data import (
    control_reference,
    load_derivatives,
    normalise_to_reference,
    stratified_split,
)


def resampled(img: nib.Nifti1Image, reference: nib.Nifti1Image, order: int) -> np.ndarray:
    """``img``'s data on ``reference``'s grid (world coordinates; zero outside ``img``)."""
    image = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float64), img.affine)
    return np.asarray(resample_from_to(image, reference, order=order, mode="constant", cval=0.0).dataobj)


def territory_means(volumes: torch.Tensor, masks: list[np.ndarray], weight: np.ndarray) -> np.ndarray:
    """(subjects, territories): each image's ``weight``-weighted mean intensity inside each mask."""
    columns = []
    for mask in masks:
        w = torch.from_numpy((mask * weight).astype(np.float32))
        columns.append(((volumes * w).sum(dim=(1, 2, 3)) / w.sum()).numpy())
    return np.column_stack(columns)


def covariate_residual_z(x: np.ndarray, table: pd.DataFrame, global_mean: np.ndarray, controls) -> np.ndarray:
    """W-scores: residuals of a regression on age, sex, site and global intensity fitted on
    controls, in units of the controls' residual standard deviation."""
    design = np.column_stack(
        [
            table["age"].to_numpy(float),
            (table["sex"] == "M").to_numpy(float),
            pd.get_dummies(table["site"]).to_numpy(float)[:, 1:],
            global_mean,
        ]
    )
    residual = x - LinearRegression().fit(design[controls], x[controls]).predict(design)
    return residual / residual[controls].std(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives")
    parser.add_argument("truth")
    parser.add_argument("--pool", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", nargs="+", default=["t1"], help="input channels (data.features)")
    args = parser.parse_args()
    features = tuple(args.features)
    truth = load_truth(args.truth)

    full = load_derivatives(args.derivatives, 1, features)  # the oracle reads the first feature
    patients = full.is_target.numpy()
    subtype = scoring.subtype_labels(full.table, truth.table)
    reference = nib.Nifti1Image(full.volumes[0, 0].numpy(), full.affine)
    inside = [resampled(mask, reference, order=0) > 0.5 for mask in truth.masks.values()]
    volumes = full.volumes[:, 0]
    x = territory_means(volumes, inside, np.ones(reference.shape, dtype=np.float32))
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

    template = load_template(float(abs(full.affine[0, 0])))
    grey = resampled(nib.Nifti1Image(template.gm, template.affine), reference, order=1)
    brain = torch.from_numpy(grey > 0.1)
    w = covariate_residual_z(
        territory_means(volumes, inside, grey), full.table, volumes[:, brain].mean(dim=1).numpy(), ~patients
    )
    effects = [round(float(w[patients & (subtype == s), j].mean()), 2) for j, s in enumerate(truth.masks)]
    best_km = adjusted_rand_score(
        subtype[patients], KMeans(k, n_init=20, random_state=args.seed).fit_predict(w[patients])
    )
    unit = w[patients] / np.linalg.norm(w[patients], axis=1, keepdims=True)
    best_dir = adjusted_rand_score(
        subtype[patients], KMeans(k, n_init=20, random_state=args.seed).fit_predict(unit)
    )
    print(
        f"best-case oracle (grey-matter-weighted territory W-scores: age, sex, site, global intensity "
        f"regressed out on controls): own-territory effects {effects}, k-means ARI {best_km:.3f}, "
        f"directions {best_dir:.3f}"
    )
    folds = 5
    supervised = cross_val_predict(
        LogisticRegression(max_iter=3000), w[patients], subtype[patients], cv=folds
    )
    with_minimum = np.column_stack([w, w.min(axis=1)])
    dx = cross_val_predict(LogisticRegression(max_iter=3000), with_minimum, patients, cv=folds)
    print(
        f"supervised ceilings on those features ({folds}-fold cross-validated): subtype ARI "
        f"{adjusted_rand_score(subtype[patients], supervised):.3f}, patient-vs-control balanced accuracy "
        f"{balanced_accuracy_score(patients, dx):.3f}"
    )

    data = load_derivatives(args.derivatives, args.pool, features)
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
    ari = adjusted_rand_score(subtype[held], probe.predict(maps[held]))
    print(
        f"supervised subtype probe on z-maps, held-out patients: balanced accuracy {accuracy:.3f}, "
        f"ARI {ari:.3f}"
    )
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
