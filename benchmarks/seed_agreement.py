"""Seeds, consensus and the linear baseline, scored as ``neurosepclr subtype`` computes them (issue 21).

    python benchmarks/seed_agreement.py RUN_SEED0 RUN_SEED1 ... --truth TRUTH --k K --out OUT.tsv

Every run must be trained on the same derivatives with one ``train.split_seed``. One row per:

* ``sepclr``: each run alone, subtyped as ``subtype`` does (training patients, whitened by the
  training controls, directions; K given; ``--method``, ``--standardise`` and ``--no-directions``
  change the subtype step), with its salient and common diagnosis probes and the subtype a linear
  probe finds in the salient space given the labels;
* ``consensus``: the consensus (``subtype --consensus``) of every ``--group-size`` (3) consecutive
  runs (with more runs than that: 0-1-2, 1-2-3, …, wrapping round; several sizes may be given) and
  of all runs, by each ``--consensus-method`` (joint, the default, and/or coassociation), with the
  mean ARI between their runs (``--checkpoint both``: each seed's best and last checkpoints both
  enter its group, as two runs, and each checkpoint gets its own ``sepclr`` row);
* ``cpca``: contrastive PCA of the same inputs at every alpha of ``subtype.cpca_alphas`` and at the
  alpha ``subtype`` chooses without labels (``label-free``);

each with the held-out ARI (patients outside the training split, assigned by the fit on training
patients), the ARI over all patients, and the seconds the step took (consensus and cPCA include
their bootstrap refits and alpha selection; the runs' shared forward pass is timed once).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scoring
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score

from neurosepclr.analysis.consensus import consensus_subtypes, run_subtyper
from neurosepclr.analysis.evaluate import probe_table
from neurosepclr.analysis.representation import cpca_space
from neurosepclr.analysis.subtype import check_consensus_runs, embed
from neurosepclr.config import SubtypeConfig
from neurosepclr.data.truth import load_truth
from neurosepclr.probes import linear_classifier
from neurosepclr.runfolder import subject_frame
from neurosepclr.training.inference import load_run


def scores(index: np.ndarray, truth: np.ndarray, patients: np.ndarray, held_out: np.ndarray) -> dict:
    return {
        "heldout_ari": adjusted_rand_score(truth[held_out], index[held_out]),
        "all_ari": adjusted_rand_score(truth[patients], index[patients]),
    }


def diagnosis_probes(space, truth_table: pd.DataFrame) -> dict:
    """Held-out balanced accuracy of the diagnosis from the salient and the common space."""
    frame = subject_frame(space.data.table, space.split)
    coordinates = {f"salient_{i}": space.salient[:, i] for i in range(space.salient.shape[1])}
    coordinates |= {f"common_{i}": space.common[:, i] for i in range(space.common.shape[1])}
    embeddings = pd.concat([frame, pd.DataFrame(coordinates)], axis=1)
    probes = probe_table(embeddings, truth_table[["participant_id", "group"]])
    rows = probes[(probes["task"] == "diagnosis") & (probes["metric"] == "balanced_accuracy")]
    held_out = {f"{row.space}_dx": row.value for row in rows.itertuples()}
    return held_out | cross_validated_diagnosis(space)


def cross_validated_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean balanced accuracy of ``probes.linear_classifier`` (standardised, balanced classes) over
    5-fold cross-validation repeated 10 times: steadier than 20 held-out subjects (issue 21)."""
    folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=10, random_state=0)
    scores = cross_val_score(linear_classifier(), x, labels, cv=folds, scoring="balanced_accuracy")
    return float(scores.mean())


def cross_validated_diagnosis(space) -> dict:
    """Diagnosis from each space over all subjects (:func:`cross_validated_accuracy`)."""
    patient = np.asarray(space.is_target)
    return {
        f"{name}_dx_cv": cross_validated_accuracy(x, patient)
        for name, x in (("salient", space.salient), ("common", space.common))
    }


def cross_validated_subtype(space, truth: np.ndarray) -> float:
    """The true subtype read from the salient space by a linear probe *given the labels* (patients
    only, :func:`cross_validated_accuracy`): high while the clustering's ARI is low means the
    clustering, not the representation, lost the subtypes."""
    patient = np.asarray(space.is_target)
    return cross_validated_accuracy(space.salient[patient], truth[patient])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders, one per seed, same split")
    parser.add_argument("--truth", type=Path, required=True, help="derivatives/truth of the simulated cohort")
    parser.add_argument("--k", type=int, required=True, help="the true number of subtypes")
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=("best", "last", "both"),
        help="subtype.checkpoint; both: each seed's best and last checkpoints enter its consensus",
    )
    parser.add_argument("--bootstrap", type=int, default=100, help="refits per run of the consensus")
    parser.add_argument("--group-size", type=int, nargs="+", default=[3], help="runs per consensus")
    parser.add_argument(
        "--consensus-method",
        nargs="+",
        default=["joint"],
        choices=("joint", "coassociation"),
        help="subtype.consensus_method (several: a row for each)",
    )
    parser.add_argument("--cohort", default="", help="name written in the cohort column")
    parser.add_argument("--method", default="kmeans", choices=("kmeans", "gmm"), help="subtype.method")
    parser.add_argument(
        "--standardise", default="controls", choices=("controls", "patients"), help="subtype.standardise"
    )
    parser.add_argument(
        "--no-directions", action="store_true", help="subtype.directions false (cluster the deviations)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    settings = SubtypeConfig(
        k=args.k,
        bootstrap=args.bootstrap,
        method=args.method,
        standardise=args.standardise,
        directions=False if args.no_directions else None,
    )
    torch.set_grad_enabled(False)

    started = time.perf_counter()
    checkpoints = ("best", "last") if args.checkpoint == "both" else (args.checkpoint,)
    runs = [load_run(run, checkpoint) for checkpoint in checkpoints for run in args.runs]
    n_seeds = len(args.runs)
    check_consensus_runs(runs[0], runs[1:], settings)
    first = embed(runs[0], torch.device("cpu"))
    spaces = [first] + [embed(run, torch.device("cpu"), first.data) for run in runs[1:]]
    forward_s = time.perf_counter() - started
    truth_table = load_truth(args.truth).table
    merged = first.data.table[["participant_id"]].merge(truth_table, on="participant_id", how="left")
    truth = merged["subtype"].fillna("control").astype(str).to_numpy()
    patients = first.is_target
    held_out = patients & (first.split != "train")
    rows = []

    def record(representation: str, detail: str, index: np.ndarray, seconds: float, **extra) -> None:
        row = {"cohort": args.cohort, "representation": representation, "detail": detail}
        row |= scores(index, truth, patients, held_out) | extra | {"seconds": seconds}
        rows.append(row)
        print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    for number, (run, space) in enumerate(zip(runs, spaces, strict=True)):
        tic = time.perf_counter()
        index = run_subtyper(space, args.k, settings, seed=0).predict(space.salient)
        seconds = time.perf_counter() - tic
        probes = diagnosis_probes(space, truth_table) | {
            "salient_subtype_cv": cross_validated_subtype(space, truth)
        }
        name = f"seed {run.config.seed}" + (
            f" {checkpoints[number // n_seeds]}" if len(checkpoints) > 1 else ""
        )
        record("sepclr", name, index, seconds, **probes)
    # every rotation of --group-size consecutive runs (the spread of such a consensus), then all runs
    # (with --checkpoint both a group holds both checkpoints of each of its seeds)
    groups = [
        [(start + i) % n_seeds for i in range(size)]
        for size in args.group_size
        if n_seeds > size
        for start in range(n_seeds)
    ]
    groups += [list(range(n_seeds))] if n_seeds > 1 else []
    groups = [[seed + n_seeds * c for c in range(len(checkpoints)) for seed in group] for group in groups]
    for method in args.consensus_method:
        settings.consensus_method = method
        for group in groups:
            tic = time.perf_counter()
            agreed = consensus_subtypes([spaces[i] for i in group], args.k, settings, seed=0)
            seeds = ",".join(str(runs[i].config.seed) for i in group[: len(group) // len(checkpoints)])
            record(
                "consensus",
                f"{method}: seeds {seeds}",
                agreed.index,
                time.perf_counter() - tic,
                mean_pairwise_ari=agreed.mean_pairwise_ari,
            )
    tic = time.perf_counter()
    linear, _, alphas = cpca_space(first, settings, [args.k], seed=0)
    chosen = float(alphas.loc[alphas["chosen"], "alpha"].iloc[0])
    index = run_subtyper(linear, args.k, settings, seed=0).predict(linear.salient)
    record("cpca", f"label-free alpha {chosen:g}", index, time.perf_counter() - tic)
    tic = time.perf_counter()
    for alpha, linear in scoring.cpca_at_each_alpha(first, settings):
        index = run_subtyper(linear, args.k, settings, seed=0).predict(linear.salient)
        record("cpca", f"alpha {alpha:g}", index, time.perf_counter() - tic)
        tic = time.perf_counter()
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False, float_format="%.4f", na_rep="n/a")
    print(f"forward pass of {len(runs)} runs: {forward_s:.1f} s; written {args.out}")


if __name__ == "__main__":
    main()
