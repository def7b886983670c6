"""Do the report's cluster tables point at the true territory? (issue 22)

For each subtype found (matched to a true subtype by the Hungarian assignment of their patients), the
rank of the first cluster whose peak lies inside the true territory, in the saliency cluster table
and in the effect-size cluster table, and the share of the cluster volume inside it.

    python benchmarks/report_maps.py RUN/subtype BIDS/derivatives/truth [--out results.tsv]
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


def territory_ranks(subtype_dir: Path, truth_dir: Path) -> pd.DataFrame:
    truth = load_truth(truth_dir)
    found = pd.read_csv(subtype_dir / "subtypes.tsv", sep="\t", dtype={"participant_id": str})
    patients = found[found["group"] == "target"].merge(truth.table[["participant_id", "subtype"]],
                                                       on="participant_id", suffixes=("", "_true"))  # fmt: skip
    mapping = match_labels(patients["subtype"].to_numpy(), patients["subtype_true"].astype(str).to_numpy())
    rows = []
    for label, true in sorted(mapping.items()):
        mask_image = truth.masks[true]
        mask = np.asarray(mask_image.dataobj) > 0
        inv = np.linalg.inv(mask_image.affine)
        row = {"subtype": label, "true_subtype": true}
        for desc in ("saliency", "effectsize"):
            table = pd.read_csv(subtype_dir / "tables" / f"subtype-{label}_desc-{desc}_clusters.tsv", sep="\t")
            peaks = table[["peak_x_mm", "peak_y_mm", "peak_z_mm"]].to_numpy(dtype=float)
            ijk = np.rint(peaks @ inv[:3, :3].T + inv[:3, 3]).astype(int)
            inside = [bool(mask[tuple(v)]) if np.all((v >= 0) & (v < mask.shape)) else False for v in ijk]
            hits = np.flatnonzero(inside)
            row[f"{desc}_clusters"] = len(table)
            row[f"{desc}_rank_of_true_territory"] = int(hits[0]) + 1 if len(hits) else np.nan
            row[f"{desc}_first_peak_region"] = table["aal_peak_region"].iloc[0] if len(table) else "none"
        pattern = f"subtype-{label}_space-*_res-2_desc-effectsize_map.nii.gz"
        effect = nib.load(next((subtype_dir / "maps").glob(pattern)))
        inside = resample_map(mask, mask_image.affine, effect.affine, effect.shape, 0) > 0
        d = np.asarray(effect.dataobj)
        row["effectsize_mean_d_inside"] = float(d[inside].mean())
        row["effectsize_mean_d_outside"] = float(d[~inside & (d != 0)].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subtype_dir", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    frame = territory_ranks(args.subtype_dir, args.truth)
    text = frame.to_csv(sep="\t", index=False, float_format="%.3f")
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
