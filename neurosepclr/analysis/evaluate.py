"""The scorecard: how well a run recovers a simulated cohort's truth (docs/method.md, "How results
are judged").

Inputs are plain files, so SepCLR runs and baselines are scored identically:

* ``subtypes.tsv``: ``participant_id`` and ``subtype`` (``n/a`` for controls), optional ``split``;
* ``embeddings.tsv``: ``participant_id``, optional ``split`` and one column per coordinate, named
  ``<space>_<k>`` (``common_0``, ``salient_3``, ``cpca_1``…); every space found is probed;
* saliency maps ``*subtype-<label>*saliency*.nii.gz`` (any depth), optional.

Measures: ARI/AMI of the predicted subtypes on patients (all, and held-out when a split exists);
the linear-probe table (patient vs control, subtype, age, sex, site) per space, fitted on the
training split and scored on held-out subjects (5-fold cross-validation when there is no split);
saliency localisation (fraction of absolute saliency inside the matched subtype's true mask and the
rank of the true regions in the AAL3 table).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    balanced_accuracy_score,
    mean_absolute_error,
    r2_score,
)

from neurosepclr.analysis.statistics import FAST_SCORES, bootstrap_interval, chance_level
from neurosepclr.data.truth import TRUTH_PATIENT, Truth, load_truth
from neurosepclr.errors import InputDataError, MissingInputError
from neurosepclr.io import atomic_write_text, read_tsv
from neurosepclr.probes import held_out_predictions

TRAIN_SPLIT = "train"
# value: held-out score; chance: a probe that knows nothing; ci_low/ci_high: 95 % bootstrap interval
PROBE_COLUMNS = ["space", "task", "metric", "value", "n", "chance", "ci_low", "ci_high"]
_SPACE_COLUMN = re.compile(r"^(?P<space>[A-Za-z][A-Za-z0-9]*)_(?P<k>\d+)$")


def subtype_agreement(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Adjusted Rand index and adjusted mutual information between two labelings."""
    return {
        "ari": float(adjusted_rand_score(true, predicted)),
        "ami": float(adjusted_mutual_info_score(true, predicted)),
    }


def match_labels(predicted: np.ndarray, true: np.ndarray) -> dict[str, str]:
    """Map each predicted label to a true label maximising the total overlap (Hungarian)."""
    pred_labels = sorted(set(map(str, predicted)))
    true_labels = sorted(set(map(str, true)))
    overlap = np.array([[np.sum((predicted == p) & (true == t)) for t in true_labels] for p in pred_labels])
    rows, cols = linear_sum_assignment(-overlap)
    return {pred_labels[r]: true_labels[c] for r, c in zip(rows, cols, strict=True)}


def embedding_spaces(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Columns grouped by space, from the ``<space>_<k>`` naming convention."""
    spaces: dict[str, list[tuple[int, str]]] = {}
    for column in frame.columns:
        match = _SPACE_COLUMN.match(column)
        if match:
            spaces.setdefault(match["space"], []).append((int(match["k"]), column))
    return {space: [c for _, c in sorted(cols)] for space, cols in spaces.items()}


def probe_table(embeddings: pd.DataFrame, truth: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The method.md probe table for every space: one row per (space, task, metric)."""
    import warnings

    with warnings.catch_warnings():  # tiny held-out sets miss classes: the score says so already
        warnings.simplefilter("ignore", UserWarning)
        return _probe_table(embeddings, truth, seed)


def _probe_table(embeddings: pd.DataFrame, truth: pd.DataFrame, seed: int) -> pd.DataFrame:
    spaces = embedding_spaces(embeddings)
    coordinates = [column for columns in spaces.values() for column in columns]
    keep = ["participant_id"] + (["split"] if "split" in embeddings else []) + coordinates
    merged = embeddings[keep].merge(truth, on="participant_id", how="inner")
    split = merged["split"].astype(str).to_numpy() if "split" in merged else None
    rows = []
    for space, columns in spaces.items():
        x = merged[columns].to_numpy(dtype=float)
        is_patient = (merged["group"] == TRUTH_PATIENT).to_numpy()
        tasks = [
            ("diagnosis", np.ones(len(merged), bool), "group", "classification"),
            ("subtype", is_patient, "subtype", "classification"),
            ("age", np.ones(len(merged), bool), "age", "regression"),
            ("sex", np.ones(len(merged), bool), "sex", "classification"),
            ("site", np.ones(len(merged), bool), "site", "classification"),
        ]
        for task, rows_used, column, kind in tasks:
            if column not in merged or merged.loc[rows_used, column].isna().all():
                continue  # a real cohort may lack the truth's subtype, or a participants.tsv column
            train = (split[rows_used] == TRAIN_SPLIT) if split is not None else None
            if kind == "classification":
                target = merged[column].astype(str).to_numpy()[rows_used]
                predicted, held = held_out_predictions(x[rows_used], target, train, seed, classification=True)
                scores = {"balanced_accuracy": balanced_accuracy_score} if predicted is not None else {}
            else:
                target = pd.to_numeric(merged[column], errors="coerce").to_numpy(dtype=float)[rows_used]
                predicted, held = held_out_predictions(
                    x[rows_used], target, train, seed, classification=False
                )
                scores = {"mae": mean_absolute_error, "r2": r2_score} if predicted is not None else {}
            for metric, score in scores.items():
                value = score(target[held], predicted)
                low, high = bootstrap_interval(target[held], predicted, FAST_SCORES[metric], seed=seed)
                chance = chance_level(metric, target[held], target[~held] if (~held).any() else None)
                rows.append(
                    {"space": space, "task": task, "metric": metric, "value": value, "n": int(held.sum()),
                     "chance": chance, "ci_low": low, "ci_high": high}
                )  # fmt: skip
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def _resample_like(img: nib.Nifti1Image, reference: nib.Nifti1Image, order: int) -> np.ndarray:
    """``img`` on ``reference``'s grid (world coordinates through both affines)."""
    if img.shape[:3] == reference.shape[:3] and np.allclose(img.affine, reference.affine, atol=1e-4):
        return np.asarray(img.dataobj, dtype=np.float64)
    mapping = np.linalg.inv(img.affine) @ reference.affine
    coords = np.indices(reference.shape[:3], dtype=np.float64).reshape(3, -1)
    mapped = mapping[:3, :3] @ coords + mapping[:3, 3:4]
    data = np.asarray(img.dataobj, dtype=np.float64)
    return ndimage.map_coordinates(data, mapped, order=order, mode="constant").reshape(reference.shape[:3])


def saliency_localisation(
    saliency: nib.Nifti1Image, mask: nib.Nifti1Image, true_regions: list[str], atlas=None
) -> dict[str, float]:
    """Fraction of |saliency| inside the true mask, and the ranks of the true regions (atlas table)."""
    values = np.abs(np.nan_to_num(np.asarray(saliency.dataobj, dtype=np.float64)))
    inside = _resample_like(mask, saliency, order=0) > 0.5
    total = values.sum()
    result = {
        "mass_inside": float(values[inside].sum() / total) if total > 0 else float("nan"),
        "volume_fraction": float(inside.mean()),
    }
    if atlas is not None:
        labels = atlas.resampled_to(saliency.affine, saliency.shape[:3]).labels
        index = np.unique(labels[labels > 0])
        means = ndimage.mean(values, labels, index)
        order = [atlas.names.get(int(i), str(i)) for i in index[np.argsort(-means)]]
        ranks = [order.index(r) + 1 for r in true_regions if r in order]
        if ranks:
            result.update(
                {
                    "best_region_rank": float(min(ranks)),
                    "mean_region_rank": float(np.mean(ranks)),
                    "n_regions": float(len(order)),
                }
            )
    return result


def find_saliency_maps(folder: Path) -> dict[str, Path]:
    """Predicted-subtype label → saliency map path (``*subtype-<label>*saliency*.nii.gz``)."""
    maps = {}
    paths = sorted(
        (p for p in folder.rglob("*saliency*.nii*") if "_feature-" not in p.name),  # the sum over features
        key=lambda p: ("desc-saliency_" not in p.name, str(p)),
    )
    for path in paths:
        match = re.search(r"subtype-([A-Za-z0-9]+)", path.name)
        if match:
            maps.setdefault(match.group(1), path)
    return maps


def _locate(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / "subtype" / name):
        if candidate.is_file():
            return candidate
    return None


def evaluate(
    run_dir: str | Path, truth_dir: str | Path, out_dir: str | Path | None = None, seed: int = 0
) -> dict:
    """Score a run or subtype folder against the truth; write ``scorecard.tsv`` and ``.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingInputError(f"run folder not found: {run_dir}")
    truth = load_truth(truth_dir)
    subtypes_path = _locate(run_dir, "subtypes.tsv")
    embeddings_path = _locate(run_dir, "embeddings.tsv")
    if subtypes_path is None and embeddings_path is None:
        raise MissingInputError(f"{run_dir} holds neither subtypes.tsv nor embeddings.tsv to evaluate")
    known = set(truth.table["participant_id"])
    rows: list[dict] = []
    card: dict = {"run": str(run_dir), "truth": str(truth_dir)}

    if subtypes_path is not None:
        predicted = read_tsv(subtypes_path)
        _check_ids(predicted, known, subtypes_path)
        merged = predicted.merge(truth.table, on="participant_id", suffixes=("_pred", ""))
        patients = merged[merged["group"] == TRUTH_PATIENT].dropna(subset=["subtype_pred"])
        if patients.empty:
            raise InputDataError(f"{subtypes_path}: no patient has a predicted subtype")
        subsets = {"all": patients}
        if "split" in patients and (patients["split"] != TRAIN_SPLIT).any():
            subsets["held_out"] = patients[patients["split"] != TRAIN_SPLIT]
        card["subtypes"] = {}
        for subset, frame in subsets.items():
            scores = subtype_agreement(
                frame["subtype_pred"].astype(str).to_numpy(), frame["subtype"].to_numpy()
            )
            card["subtypes"][subset] = {**scores, "n": len(frame)}
            for metric, value in scores.items():
                rows.append(
                    {
                        "section": "subtype",
                        "space": "predicted",
                        "task": "subtype",
                        "metric": metric,
                        "subset": subset,
                        "value": value,
                        "n": len(frame),
                    }
                )
        mapping = match_labels(
            patients["subtype_pred"].astype(str).to_numpy(), patients["subtype"].to_numpy()
        )
        card["label_matching"] = mapping
        maps = find_saliency_maps(subtypes_path.parent)
        if maps:
            card["saliency"] = _score_saliency(maps, mapping, truth, rows)

    if embeddings_path is not None:
        embeddings = read_tsv(embeddings_path)
        _check_ids(embeddings, known, embeddings_path)
        probes = probe_table(embeddings, truth.table, seed)
        card["probes"] = probes.to_dict(orient="records")
        for record in probes.to_dict(orient="records"):
            rows.append({"section": "probe", "subset": "held_out", **record})

    out = Path(out_dir) if out_dir is not None else (subtypes_path or embeddings_path).parent
    table = pd.DataFrame(rows, columns=["section", "space", "task", "metric", "subset", "value", "n"])
    atomic_write_text(
        out / "scorecard.tsv",
        table.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.4f", lineterminator="\n"),
    )
    atomic_write_text(out / "scorecard.json", json.dumps(card, indent=2, default=float) + "\n")
    card["table"] = table
    return card


def _check_ids(frame: pd.DataFrame, known: set[str], path: Path) -> None:
    if "participant_id" not in frame:
        raise InputDataError(f"{path}: no participant_id column")
    unknown = sorted(set(frame["participant_id"]) - known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise InputDataError(f"{path}: {len(unknown)} participant(s) not in the truth table: {shown}")


def _score_saliency(maps: dict[str, Path], mapping: dict[str, str], truth: Truth, rows: list[dict]) -> dict:
    from neurosepclr.atlases import load_atlas

    atlas = load_atlas("aal")
    scores = {}
    for label, path in maps.items():
        true_subtype = mapping.get(label)
        if true_subtype is None:
            continue
        result = saliency_localisation(
            nib.load(path), truth.masks[true_subtype], truth.regions[true_subtype], atlas
        )
        scores[label] = {"matched_subtype": true_subtype, **result}
        for metric, value in result.items():
            rows.append(
                {
                    "section": "saliency",
                    "space": f"subtype-{label}",
                    "task": true_subtype,
                    "metric": metric,
                    "subset": "all",
                    "value": value,
                    "n": 1,
                }
            )
    return scores
