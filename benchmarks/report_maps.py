"""Do the report's cluster tables point at the true territory? (issue 22)

For each subtype found (matched to a true subtype by the Hungarian assignment of their patients), the
rank of the first cluster whose peak lies inside the true territory, in the saliency cluster table
and in the effect-size cluster table, and the share of the cluster volume inside it.

    python benchmarks/report_maps.py RUN/subtype BIDS/derivatives/truth [--out results.tsv]
        [--derivatives DERIV]

With ``--derivatives`` (the preprocess folder) a second table gives the effect-size map's ranks when
the true subtypes are given (the ceiling of the model-independent map on these inputs, whatever the
model found), with the same thresholds as ``subtype``'s defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from neurosepclr.analysis.clusters import resample_map
from neurosepclr.analysis.evaluate import match_labels
from neurosepclr.data.truth import load_truth


def matched_patients(subtype_dir: Path, truth) -> tuple[pd.DataFrame, dict[str, str]]:
    """The patients of ``subtypes.tsv`` with their true subtype (``subtype_true``), and the found →
    true subtype assignment that agrees most (Hungarian)."""
    found = pd.read_csv(subtype_dir / "subtypes.tsv", sep="\t", dtype={"participant_id": str})
    true = truth.table[["participant_id", "subtype"]]
    patients = found[found["group"] == "target"].merge(true, on="participant_id", suffixes=("", "_true"))
    patients["subtype_true"] = patients["subtype_true"].astype(str)
    return patients, match_labels(patients["subtype"].to_numpy(), patients["subtype_true"].to_numpy())


def territory_ranks(subtype_dir: Path, truth_dir: Path) -> pd.DataFrame:
    truth = load_truth(truth_dir)
    _, mapping = matched_patients(subtype_dir, truth)
    rows = []
    for label, true in sorted(mapping.items()):
        mask_image = truth.masks[true]
        mask = np.asarray(mask_image.dataobj) > 0
        row = {"subtype": label, "true_subtype": true}
        for desc in ("saliency", "effectsize"):
            table = pd.read_csv(
                subtype_dir / "tables" / f"subtype-{label}_desc-{desc}_clusters.tsv", sep="\t"
            )
            row[f"{desc}_clusters"] = len(table)
            row[f"{desc}_rank_of_true_territory"] = _first_hit(table, mask, mask_image.affine)
            row[f"{desc}_first_peak_region"] = table["aal_peak_region"].iloc[0] if len(table) else "none"
        pattern = f"subtype-{label}_space-*_res-2_desc-effectsize_map.nii.gz"
        effect = nib.load(next((subtype_dir / "maps").glob(pattern)))
        inside = resample_map(mask, mask_image.affine, effect.affine, effect.shape, 0) > 0
        d = np.asarray(effect.dataobj)
        row["effectsize_mean_d_inside"] = float(d[inside].mean())
        row["effectsize_mean_d_outside"] = float(d[~inside & (d != 0)].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def calibration(subtype_dir: Path, truth_dir: Path) -> pd.DataFrame:
    """Patients binned by assignment frequency: how many, and the share whose subtype (matched to
    the truth) is right. A calibrated frequency has accuracy rising with it."""
    patients, mapping = matched_patients(subtype_dir, load_truth(truth_dir))
    right = patients["subtype"].map(mapping) == patients["subtype_true"]
    bins = pd.cut(patients["assignment_frequency"], [0, 0.5, 0.7, 0.9, 0.99, 1.0], include_lowest=True)
    table = right.groupby(bins, observed=True).agg(["size", "mean"]).reset_index()
    table.columns = ["assignment_frequency", "patients", "share_right"]
    return table


def _first_hit(table: pd.DataFrame, mask: np.ndarray, affine: np.ndarray) -> float:
    if table.empty:
        return np.nan
    inv = np.linalg.inv(affine)
    ijk = np.rint(table[["peak_x_mm", "peak_y_mm", "peak_z_mm"]].to_numpy(float) @ inv[:3, :3].T + inv[:3, 3])
    ijk = ijk.astype(int)
    inside = [bool(mask[tuple(v)]) if np.all((v >= 0) & (v < mask.shape)) else False for v in ijk]
    hits = np.flatnonzero(inside)
    return int(hits[0]) + 1 if len(hits) else np.nan


def true_subtype_ranks(derivatives: Path, truth_dir: Path) -> pd.DataFrame:
    """Effect-size clusters of the true subtypes (thresholds of SubtypeConfig's defaults)."""
    from neurosepclr.analysis.effect_size import effect_size_maps
    from neurosepclr.analysis.subtype import effect_size_clusters, shown_effect_size
    from neurosepclr.atlases import load_atlas
    from neurosepclr.config import SubtypeConfig

    settings, truth = SubtypeConfig(), load_truth(truth_dir)
    table = pd.read_csv(derivatives / "cohort.tsv", sep="\t", dtype={"participant_id": str})
    true = table[["participant_id"]].merge(truth.table, on="participant_id", how="left")["subtype"]
    labels = np.where(table["group"] == "target", true.astype(str), "control")
    maps = effect_size_maps(derivatives, table, np.arange(len(table)), labels, ("t1",))
    atlas, rows = load_atlas("aal"), []
    for name, mask_image in truth.masks.items():
        shown = shown_effect_size(maps.d["t1"][name], maps.t["t1"][name], maps, settings)
        clusters = effect_size_clusters(shown, maps.affine, [atlas], settings)
        mask = np.asarray(mask_image.dataobj) > 0
        rows.append(
            {
                "true_subtype": name,
                "effectsize_clusters": len(clusters),
                "effectsize_rank_of_true_territory": _first_hit(clusters, mask, mask_image.affine),
                "effectsize_first_peak_region": clusters["aal_peak_region"].iloc[0]
                if len(clusters)
                else "none",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subtype_dir", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--derivatives", type=Path)
    args = parser.parse_args()
    frame = territory_ranks(args.subtype_dir, args.truth)
    text = "# subtypes found by the model\n" + frame.to_csv(sep="\t", index=False, float_format="%.3f")
    text += "# calibration of the assignment frequency\n" + calibration(args.subtype_dir, args.truth).to_csv(
        sep="\t", index=False, float_format="%.3f"
    )
    if args.derivatives:
        ceiling = true_subtype_ranks(args.derivatives, args.truth)
        text += "# effect-size maps of the true subtypes\n" + ceiling.to_csv(sep="\t", index=False)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
