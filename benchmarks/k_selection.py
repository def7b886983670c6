"""Which K does ``subtype --k auto`` choose, and what does that choice cost in subtype recovery?

For each trained run (its ``embeddings.tsv`` and ``split.tsv``) and the simulated truth, the
training patients' salient coordinates are scored over a range of K with
:func:`neurosepclr.clustering.stability_table`, exactly as ``subtype`` does (whitened by the
training controls, directions), under two rules:

- ``raw``: (split-half stability + silhouette) / 2 (``--null-draws 0``; the earlier rule);
- ``null``: both measures minus their values on structureless Gaussian cohorts with the patients'
  mean and covariance (``--null-draws 5``, the default).

For every K it also prints the ARI of that K's clustering against the true subtypes (training
patients, and held-out patients assigned by ``predict``), so the cost of a wrong choice is visible.

    python benchmarks/k_selection.py OUT.tsv RUN_DIR TRUTH [RUN_DIR TRUTH ...] [--k-range 2 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import scoring

from neurosepclr.clustering import stability_table
from neurosepclr.data.truth import load_truth


def run_rows(run_dir: Path, truth_dir: Path, k_values: list[int], seed: int) -> list[dict]:
    frame = scoring.read_embeddings(run_dir / "embeddings.tsv")
    subtype = scoring.subtype_labels(frame, load_truth(truth_dir).table)
    salient = scoring.coordinates(frame)
    patients, train = scoring.roles(frame)
    controls = train & ~patients
    tables, seconds = {}, {}
    for rule, draws in (("raw", 0), ("null", 5)):
        start = time.perf_counter()
        tables[rule] = stability_table(
            salient[patients & train],
            k_values,
            random_state=seed,
            null_draws=draws,
            standardise="controls",
            reference=salient[controls],
            directions=True,
        )
        seconds[rule] = time.perf_counter() - start
    rows = []
    for k in tables["raw"]["k"]:
        ari = scoring.held_out_subtype_ari(salient, subtype, patients, train, int(k), seed=seed)
        row = {"run": str(run_dir), "true_k": scoring.true_k(subtype, patients), "k": k}
        for rule, table in tables.items():
            line = table.loc[table["k"] == k].iloc[0]
            row[f"{rule}_score"] = round(float(line["score"]), 3)
            row[f"{rule}_chosen"] = bool(line["chosen"])
            row[f"{rule}_seconds"] = round(seconds[rule], 1)
        null = tables["null"].loc[tables["null"]["k"] == k].iloc[0]
        row["stability"] = round(float(null["stability_ari_mean"]), 3)
        row["null_stability"] = round(float(null["null_stability"]), 3)
        row["ari_train"] = round(ari["train"], 3)
        row["ari_heldout"] = round(ari["held_out"], 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("pairs", nargs="+", help="RUN_DIR TRUTH pairs")
    parser.add_argument("--k-range", type=int, nargs=2, default=[2, 6])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("expected RUN_DIR TRUTH pairs")
    k_values = list(range(args.k_range[0], args.k_range[1] + 1))
    frames = []
    for run_dir, truth_dir in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        frame = pd.DataFrame(run_rows(Path(run_dir), Path(truth_dir), k_values, args.seed))
        frames.append(frame)
        chosen = {rule: frame.loc[frame[f"{rule}_chosen"]].iloc[0] for rule in ("raw", "null")}
        print(
            f"{run_dir}: true K {frame['true_k'].iloc[0]}; "
            + "; ".join(
                f"{rule} → K {int(c['k'])} (score {c[f'{rule}_score']:.3f}, ARI train {c['ari_train']:.2f}, "
                f"held-out {c['ari_heldout']:.2f}, {c[f'{rule}_seconds']:.0f} s)"
                for rule, c in chosen.items()
            ),
            flush=True,
        )
    pd.concat(frames).to_csv(args.out, sep="\t", index=False)


if __name__ == "__main__":
    main()
