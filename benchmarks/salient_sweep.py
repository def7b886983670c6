"""Ablation sweep for the salient space (issue #9): train each variant, score it on held-out subjects.

Each variant is a list of ``--set`` overrides applied on top of a base recipe. For every variant and
seed the script trains with :func:`neurosepclr.training.loop.train`, then scores subjects *not used
for training* (the run's validation split):

- salient and common patient-vs-control balanced accuracy (logistic probe fitted on the training split),
- subtype ARI: :class:`SalientSubtyper` (k-means, K = true number of subtypes) fitted on training
  patients' salient coordinates, held-out patients assigned by ``predict``; columns
  ``subtype_ari_*`` standardise over the training patients (as every result before session 5),
  ``ctrl_subtype_ari_*`` whiten against the training controls (``subtype.standardise: controls``),
  ``dir_subtype_ari_*`` also cluster unit-length deviations (``subtype.directions``, the default).

``--rescore`` scores run folders already in OUT again (no training), e.g. after a change of the
subtyping step.

Usage::

    python benchmarks/salient_sweep.py DERIVATIVES TRUTH OUT --base pipelines/sepclr-paper-medical.yaml \\
        --variants benchmarks/sweeps/salient.yaml [--only NAME ...] [--seeds 0 1 2] [--set k=v ...]

Rows are appended to ``OUT/sweep.tsv`` as each run ends, so a sweep cut off by a time limit keeps
what it finished.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.evaluate import load_truth
from neurosepclr.analysis.subtyping import SalientSubtyper
from neurosepclr.config import load_config
from neurosepclr.training.inference import load_run
from neurosepclr.training.loop import train, write_embeddings
from neurosepclr.training.probes import _classify, representations


def best_checkpoint_embeddings(run_dir: Path) -> tuple[pd.DataFrame, int]:
    """Representations of the run's cohort at its ``best`` checkpoint (what ``subtype`` uses) and its step."""
    run = load_run(run_dir, "best")
    data = run.cohort()
    split = data.table[["participant_id"]].merge(run.split[["participant_id", "split"]], how="left")["split"]
    common, salient = representations(run.model, data.volumes, torch.device("cpu"))
    write_embeddings(run_dir / "embeddings-best.tsv", data.table, split.to_numpy(), common, salient)
    return pd.read_csv(run_dir / "embeddings-best.tsv", sep="\t", dtype={"participant_id": str}), run.step


def held_out_scores(frame: pd.DataFrame, truth: pd.DataFrame, seed: int) -> dict[str, float]:
    frame = frame.merge(truth[["participant_id", "subtype"]], on="participant_id", how="left")
    train_rows, val_rows = frame["split"] == "train", frame["split"] == "val"
    out = {}
    for space in ("common", "salient"):
        x = frame.filter(regex=f"^{space}_\\d+$").to_numpy()
        y = frame["group"].to_numpy()
        out[f"{space}_dx_bacc"] = _classify(x[train_rows], y[train_rows], x[val_rows], y[val_rows])
    salient = frame.filter(regex=r"^salient_\d+$").to_numpy()
    patients = frame["group"] == "target"
    k = frame.loc[patients, "subtype"].nunique()
    held = patients & val_rows
    for prefix, standardise, directions in (
        ("", "patients", False),
        ("ctrl_", "controls", False),
        ("dir_", "controls", True),
    ):
        model = SalientSubtyper(k, standardise=standardise, directions=directions, random_state=seed)
        model.fit(salient[patients & train_rows], reference=salient[~patients & train_rows])
        out[f"{prefix}subtype_ari_heldout"] = adjusted_rand_score(
            frame.loc[held, "subtype"], model.predict(salient[held])
        )
        out[f"{prefix}subtype_ari_train"] = adjusted_rand_score(
            frame.loc[patients & train_rows, "subtype"], model.labels_
        )
    out["n_heldout_patients"] = int(held.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("derivatives", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--variants", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rescore", action="store_true", help="score existing run folders, train nothing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    variants = yaml.safe_load(args.variants.read_text())
    truth = load_truth(args.truth).table
    args.out.mkdir(parents=True, exist_ok=True)
    table_path = args.out / ("rescore.tsv" if args.rescore else "sweep.tsv")
    for name, overrides in variants.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            config = load_config(args.base, [*args.overrides, *(overrides or []), f"seed={seed}"])
            run_dir = args.out / f"{name}_seed{seed}"
            started = time.perf_counter()
            if args.rescore:
                if not (run_dir / "embeddings.tsv").is_file():
                    continue
            else:
                train(config, args.derivatives, run_dir, force=True, progress=False)
            row = {
                "variant": name,
                "seed": seed,
                "overrides": " ".join(overrides or []),
                **held_out_scores(
                    pd.read_csv(run_dir / "embeddings.tsv", sep="\t", dtype={"participant_id": str}),
                    truth,
                    seed,
                ),
                "train_seconds": float("nan") if args.rescore else round(time.perf_counter() - started, 1),
                "steps": config.train.steps,
                "select": config.train.select,
            }
            best_frame, best_step = best_checkpoint_embeddings(run_dir)
            row |= {f"best_{k}": v for k, v in held_out_scores(best_frame, truth, seed).items()}
            row |= {
                "best_step": best_step,
                "machine": platform.node(),
            }
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            pd.DataFrame([row]).to_csv(
                table_path,
                sep="\t",
                index=False,
                mode="a",
                header=not table_path.exists(),
                float_format="%.4f",
            )
    results = pd.read_csv(table_path, sep="\t")
    columns = ["salient_dx_bacc", "common_dx_bacc"]
    columns += [f"{p}subtype_ari_heldout" for p in ("", "ctrl_", "dir_")]
    columns += [f"best_{c}" for c in columns if f"best_{c}" in results]
    summary = results.groupby("variant")[columns].agg(["mean", "std"])
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
