"""Quality on a simulated cohort: SepCLR runs side by side with contrastive PCA, PCA and voxel z-scores.

For every method the representation is scored with `neurosepclr evaluate` (held-out probe table)
and subtypes are found by k-means (K = number of true subtypes) fitted on the training patients and
applied to held-out patients; ARI/AMI are reported on held-out patients. Each run's salient space
is also clustered by the ``subtype`` estimator's defaults (``SalientSubtyper``: whitened by the
training controls, clustered by direction), the way ``neurosepclr subtype`` finds subtypes. All
methods use the same preprocessed voxels, pooled like the runs (``train.pool`` of the first run),
and the same split.

    python benchmarks/quality.py DERIVATIVES TRUTH_DIR OUT_DIR RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scoring
import yaml

from neurosepclr.analysis.baselines import (
    ContrastivePCA,
    embeddings_frame,
    flatten_volumes,
    kmeans_subtypes,
    roi_means,
    subtypes_frame,
    zscore_against_controls,
)
from neurosepclr.analysis.evaluate import evaluate
from neurosepclr.atlases import load_atlas
from neurosepclr.data.truth import load_truth
from neurosepclr.training.data import load_derivatives


def _score(folder: Path, truth: Path, embeddings: pd.DataFrame, subtypes: pd.DataFrame) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    embeddings.to_csv(folder / "embeddings.tsv", sep="\t", index=False, na_rep="n/a")
    subtypes.to_csv(folder / "subtypes.tsv", sep="\t", index=False, na_rep="n/a")
    card = evaluate(folder, truth)
    probes = pd.DataFrame(card["probes"]).set_index(["space", "task", "metric"])["value"]
    held = card["subtypes"].get("held_out", card["subtypes"]["all"])
    return {"ari_held_out": held["ari"], "ami_held_out": held["ami"], "probes": probes}


def subtyper_subtypes(rep: np.ndarray, is_target: np.ndarray, train: np.ndarray, k: int):
    """``SalientSubtyper`` defaults (controls whitening, directions) fitted on the training patients
    with the training controls as reference; labels for every patient (``None`` for controls)."""
    model = scoring.fit_subtyper(rep, is_target, train, k, standardise="controls", directions=True, seed=0)
    labels = np.full(len(rep), None, dtype=object)
    labels[is_target] = model.predict(rep[is_target]).astype(str)
    return labels, np.nan


def data_full_affine(args) -> np.ndarray:
    """Affine of the unpooled preprocessed grid."""
    import nibabel as nib

    cohort = pd.read_csv(args.derivatives / "cohort.tsv", sep="\t")
    return nib.load(args.derivatives / cohort["preproc"].iloc[0]).affine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("derivatives", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--alphas", default="0.5,1,2,4,8,16")
    args = parser.parse_args()

    first = yaml.safe_load((args.runs[0] / "config.yaml").read_text())
    pool = first["train"]["pool"]
    split_table = pd.read_csv(args.runs[0] / "split.tsv", sep="\t", dtype=str)
    data = load_derivatives(args.derivatives, pool)
    table = data.table
    split = table[["participant_id"]].merge(split_table, on="participant_id")["split"].to_numpy()
    is_target = data.is_target.numpy()
    train = split == "train"
    k = load_truth(args.truth).table["subtype"].dropna().nunique()
    x = flatten_volumes(data.volumes.numpy())
    rows = []

    def record(name, space, rep, note="", cluster=kmeans_subtypes):
        labels, silhouette = cluster(rep, is_target, train, k)
        result = _score(
            args.out / name,
            args.truth,
            embeddings_frame(table, split, space, rep),
            subtypes_frame(table, split, labels),
        )
        p = result["probes"]
        rows.append(
            {
                "method": name,
                "note": note,
                "ari_held_out": result["ari_held_out"],
                "ami_held_out": result["ami_held_out"],
                "silhouette_train": silhouette,
                "dx_bacc": p.get((space, "diagnosis", "balanced_accuracy"), np.nan),
                "subtype_bacc": p.get((space, "subtype", "balanced_accuracy"), np.nan),
                "age_r2": p.get((space, "age", "r2"), np.nan),
                "sex_bacc": p.get((space, "sex", "balanced_accuracy"), np.nan),
                "site_bacc": p.get((space, "site", "balanced_accuracy"), np.nan),
            }
        )
        print(json.dumps({key: value for key, value in rows[-1].items()}, default=float), flush=True)

    from sklearn.decomposition import PCA

    record("pca20", "pca", PCA(20, random_state=0).fit(x[train]).transform(x))
    controls = train & ~is_target
    z = (x - x[controls].mean(0)) / (x[controls].std(0) + 1e-6)
    record("zscore_pca20", "zpca", PCA(20, random_state=0).fit(z[train]).transform(z))
    rois, _ = roi_means(
        load_derivatives(args.derivatives, 1).volumes.numpy(), data_full_affine(args), load_atlas("aal")
    )
    record(
        "roi_zscore",
        "roi",
        zscore_against_controls(rois, controls),
        note="AAL3 regional means, z vs controls (unpooled grid)",
    )
    best = None
    for alpha in [float(a) for a in args.alphas.split(",")]:
        cpca = ContrastivePCA(n_components=10, alpha=alpha).fit(x[train], is_target[train])
        rep = cpca.transform(x)
        _, silhouette = kmeans_subtypes(rep, is_target, train, k)
        if best is None or silhouette > best[0]:
            best = (silhouette, alpha, rep)
        record(f"cpca_alpha{alpha:g}", "cpca", rep, note="fixed alpha")
    record("cpca_auto", "cpca", best[2], note=f"alpha {best[1]:g} chosen by training silhouette")

    for run in args.runs:
        emb = scoring.read_embeddings(run / "embeddings.tsv")
        emb = table[["participant_id"]].merge(emb, on="participant_id")
        for space in ("salient", "common"):
            rep = scoring.coordinates(emb, space)
            record(f"{run.name}:{space}", space, rep, note=f"run ({run.name})")
            if space == "salient":
                record(
                    f"{run.name}:salient_subtyper",
                    space,
                    rep,
                    note="subtype estimator (controls, directions)",
                    cluster=subtyper_subtypes,
                )

    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "quality.tsv", sep="\t", index=False, float_format="%.3f")
    print(frame.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
