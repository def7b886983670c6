"""Ablation sweep for the salient space (issue #9): train each variant, score it on held-out subjects.

Each variant is a list of ``--set`` overrides applied on top of a base recipe. For every variant and
seed the script trains with :func:`neurosepclr.training.loop.train`, then scores subjects *not used
for training* (the run's validation split):

- salient and common patient-vs-control balanced accuracy (logistic probe fitted on the training split),
- subtype ARI: :class:`SalientSubtyper` (k-means, K = true number of subtypes) fitted on training
  patients' salient coordinates, held-out patients assigned by ``predict``; columns
  ``subtype_ari_*`` standardise over the training patients (the subtyping of the earliest sweeps),
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
import scoring
import torch
import yaml

from neurosepclr.compute import representations
from neurosepclr.config import load_config
from neurosepclr.data.truth import load_truth
from neurosepclr.probes import balanced_accuracy_probe
from neurosepclr.runfolder import write_embeddings
from neurosepclr.training.inference import load_run
from neurosepclr.training.loop import train


def best_checkpoint_embeddings(run_dir: Path) -> tuple[pd.DataFrame, int]:
    """Representations of the run's cohort at its ``best`` checkpoint (what ``subtype`` uses) and its step."""
    run = load_run(run_dir, "best")
    data = run.cohort()
    split = data.table[["participant_id"]].merge(run.split[["participant_id", "split"]], how="left")["split"]
    common, salient = representations(run.model, data.volumes, torch.device("cpu"))
    write_embeddings(run_dir / "embeddings-best.tsv", data.table, split.to_numpy(), common, salient)
    return scoring.read_embeddings(run_dir / "embeddings-best.tsv"), run.step


def held_out_scores(frame: pd.DataFrame, truth: pd.DataFrame, seed: int) -> dict[str, float]:
    """Diagnosis probes of both spaces and the three subtypings' ARI (train and held-out patients)."""
    patients, train_rows = scoring.roles(frame)
    group = frame["group"].to_numpy()
    out = {}
    for name in ("common", "salient"):
        x = scoring.coordinates(frame, name)
        out[f"{name}_dx_bacc"] = balanced_accuracy_probe(
            x[train_rows], group[train_rows], x[~train_rows], group[~train_rows]
        )
    subtype = scoring.subtype_labels(frame, truth)
    k = scoring.true_k(subtype, patients)
    for prefix, standardise, directions in scoring.STANDARDISATIONS:
        ari = scoring.held_out_subtype_ari(
            scoring.coordinates(frame),
            subtype,
            patients,
            train_rows,
            k,
            standardise=standardise,
            directions=directions,
            seed=seed,
        )
        out[f"{prefix}subtype_ari_heldout"] = ari["held_out"]
        out[f"{prefix}subtype_ari_train"] = ari["train"]
    out["n_heldout_patients"] = int((patients & ~train_rows).sum())
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
                **held_out_scores(scoring.read_embeddings(run_dir / "embeddings.tsv"), truth, seed),
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
