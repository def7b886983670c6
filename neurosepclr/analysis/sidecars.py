"""Outputs as data: every TSV and NIfTI that ``subtype`` writes gets a JSON sidecar (BIDS style).

A TSV's sidecar describes each column (``Description``, ``Units`` where there are some, ``Levels``
for coded values); a NIfTI's says what the map is, its units, the threshold drawn in the report
and the run it comes from. A column without a description is an error, so a new column cannot be
written undocumented. Floats are written with 6 significant digits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import pandas as pd

from neurosepclr.io import atomic_write_bytes, atomic_write_text, nifti_gz_bytes

_SUBTYPE = r"S\d+"
# exact column name, or a regular expression matching the whole name → (description, units, levels)
COLUMNS: dict[str, tuple[str, str | None, dict | None]] = {
    "participant_id": ("BIDS participant label", None, None),
    "session_id": ("BIDS session label (n/a without sessions)", None, None),
    "group": (
        "role in the analysis",
        None,
        {"background": "control (the reference group)", "target": "patient"},
    ),
    "group_label": ("the participants.tsv group value as given (data.group_column)", None, None),
    "split": (
        "whether the subject trained the encoders and the subtypes",
        None,
        {"train": "training split", "val": "held out from training", "new": "not in the run's cohort"},
    ),
    "subtype": ("assigned subtype (S1 the largest), or 'control'", None, None),
    "probability": (
        "membership probability of the assigned subtype (soft k-means / GMM posterior); "
        "overconfident, prefer assignment_frequency",
        None,
        None,
    ),
    "distance": ("distance to the subtype's centre in the standardised salient coordinates", None, None),
    "confident": (
        "assignment_frequency reaches subtype.confidence (the probability when subtype.bootstrap is 0)",
        None,
        None,
    ),
    "in_training": ("the subject (same ID or same image) was in the training split", None, None),
    "assignment_frequency": (
        "share of bootstrap refits of the subtypes that assign the patient to its "
        "subtype: the calibrated uncertainty",
        None,
        None,
    ),
    "nearest_other_subtype": ("the subtype whose centre is next closest", None, None),
    "nearest_other_frequency": (
        "share of bootstrap refits that assign the patient to nearest_other_subtype",
        None,
        None,
    ),
    rf"p_{_SUBTYPE}": ("membership probability of this subtype", None, None),
    rf"freq_{_SUBTYPE}": ("share of bootstrap refits that assign the patient to this subtype", None, None),
    r"common_\d+": ("coordinate of the common (shared with controls) representation", None, None),
    r"salient_\d+": ("coordinate of the salient (patient-specific) representation", None, None),
    "k": ("number of subtypes", None, None),
    "stability_ari_mean": (
        "mean adjusted Rand index between the two halves' models, over split-half resamples",
        None,
        None,
    ),
    "stability_ari_sd": ("its standard deviation", None, None),
    "silhouette": ("silhouette of the fit on all training patients", None, None),
    "smallest_subtype": ("patients in the smallest subtype of that fit", None, None),
    "score": (
        "(stability − null stability + silhouette − null silhouette) / 2; K maximising it is chosen",
        None,
        None,
    ),
    "null_stability": (
        "stability of structureless data (a Gaussian with the patients' covariance)",
        None,
        None,
    ),
    "null_silhouette": ("silhouette of structureless data", None, None),
    "chosen": ("the K used", None, None),
    "n": ("number of subjects", None, None),
    "age_mean": ("mean age", "year", None),
    "age_sd": ("standard deviation of age", "year", None),
    r"(sex|site)=.+": ("number of subjects with this value", None, None),
    "space": ("representation probed", None, {"common": "common space", "salient": "salient space"}),
    "task": ("what the linear probe predicts", None, None),
    "metric": (
        "score",
        None,
        {
            "balanced_accuracy": "held-out balanced accuracy",
            "r2": "held-out R²",
            "mae": "held-out mean absolute error (units of the task)",
        },
    ),
    "value": ("held-out score (training split → held-out subjects; 5-fold CV without a split)", None, None),
    "chance": (
        "score of a probe that knows nothing (1 / classes; R² 0; MAE of the training mean)",
        None,
        None,
    ),
    "ci_low": ("lower end of the 95 % bootstrap interval over held-out subjects", None, None),
    "ci_high": ("upper end of the 95 % bootstrap interval over held-out subjects", None, None),
    "status": ("red / amber / green / info", None, None),
    "check": ("what is checked", None, None),
    "explanation": ("one line on what the status means", None, None),
    "rank": ("rank by mean absolute value", None, None),
    "region": ("atlas label name", None, None),
    "region_name": ("full region name", None, None),
    "label": ("atlas label index", None, None),
    "hemisphere": (
        "left / right / midline (from the name, else the share of voxels left of x = 0)",
        None,
        None,
    ),
    "volume_mm3": ("volume", "mm^3", None),
    "mean_saliency": ("mean signed saliency over the region", "arbitrary (attribution units)", None),
    "mean_abs_saliency": ("mean absolute saliency over the region", "arbitrary (attribution units)", None),
    "share_abs_saliency": ("share of the absolute saliency of all labelled voxels", None, None),
    "mean_d": ("mean Cohen's d over the region", "Cohen's d", None),
    "mean_abs_d": ("mean absolute Cohen's d over the region", "Cohen's d", None),
    "share_abs_d": ("share of the absolute d of all labelled voxels", None, None),
    "cluster": ("cluster number, largest first", None, None),
    "sign": ("side of the threshold", None, {"+": "above +threshold", "-": "below −threshold"}),
    "peak_z": (
        "z of the saliency test at the peak (one-sided Welch, subtype vs controls, uncorrected)",
        None,
        None,
    ),
    "peak_signedsaliency": ("mean signed saliency at the peak", "arbitrary (attribution units)", None),
    "peak_d": ("Cohen's d at the peak (subtype vs controls, adjusted for covariates)", "Cohen's d", None),
    "peak_x_mm": ("peak, MNI x (right +)", "mm", None),
    "peak_y_mm": ("peak, MNI y (anterior +)", "mm", None),
    "peak_z_mm": ("peak, MNI z (superior +)", "mm", None),
    "peak_hemisphere": ("side of the peak", None, None),
    r".+_peak_region": ("atlas region at the peak (full name; 'unlabelled' outside every label)", None, None),
    r".+_regions": ("regions covering most of the cluster, with their share of its volume", None, None),
    "feature": ("input feature (data.features)", None, None),
    "shared_top_regions": (
        "of the top regions of the saliency map and of the effect-size map, how many are the same",
        None,
        None,
    ),
    "top_regions": ("number of top regions compared", None, None),
    "saliency_top_regions": ("top regions of the saliency map (mean |saliency|)", None, None),
    "effect_size_top_regions": ("top regions of the effect-size map (mean |d|)", None, None),
    "correlation": ("voxel-wise correlation of |saliency| and |d| inside the brain mask", None, None),
    r"cpca_\d+": ("coordinate of contrastive PCA of the inputs (patients against controls)", None, None),
    "subtype_cpca": (
        "the patient's subtype in contrastive PCA (same K and clustering), named after the reported "
        "subtype it overlaps most",
        None,
        None,
    ),
    "subtype_sepclr": (
        "the patient's subtype in the SepCLR salient space (same K and clustering), named after the "
        "reported subtype it overlaps most",
        None,
        None,
    ),
    "alpha": ("contrast strength alpha of contrastive PCA (C_patients − alpha C_controls)", None, None),
    "cpca_alpha": ("alpha of contrastive PCA, chosen without labels (cpca_alpha.tsv)", None, None),
    "representation": (
        "what the subtypes were clustered in",
        None,
        {"sepclr": "SepCLR salient space", "cpca": "contrastive PCA of the inputs"},
    ),
    "role": ("reported: the subtypes of subtypes.tsv; compared: the other representation's", None, None),
    "ari_all_patients": ("adjusted Rand index with the reported subtypes, every patient", None, None),
    "ari_heldout_patients": ("adjusted Rand index with the reported subtypes, held-out patients", None, None),
    "run_dir": ("trained run folder", None, None),
    "seed": ("the run's global seed", None, None),
    "checkpoint": ("checkpoint file the run's representations come from", None, None),
    "ari_with_consensus": ("adjusted Rand index of the run's own subtypes with the consensus", None, None),
    "mean_ari_with_other_runs": (
        "mean adjusted Rand index of the run's subtypes with each other run's (patients)",
        None,
        None,
    ),
}


def describe_columns(columns: list[str], extra: dict[str, str] | None = None) -> dict:
    """Sidecar entries of ``columns``; ``extra``: descriptions of columns named at run time."""
    entries = {}
    for column in columns:
        if extra and column in extra:
            entries[column] = {"Description": extra[column]}
            continue
        found = COLUMNS.get(column)
        if found is None:
            found = next((v for k, v in COLUMNS.items() if re.fullmatch(k, column)), None)
        if found is None:
            raise KeyError(f"output column {column!r} has no description (neurosepclr/analysis/sidecars.py)")
        description, units, levels = found
        entry = {"Description": description}
        if units:
            entry["Units"] = units
        if levels:
            entry["Levels"] = levels
        entries[column] = entry
    return entries


def sidecar_path(path: Path) -> Path:
    name = path.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".tsv")
    return path.with_name(f"{name}.json")


def tsv_sidecar(
    about: str, columns: list[str], extra: dict[str, str] | None = None, metadata: dict | None = None
) -> str:
    """A TSV's sidecar text: ``about`` the file, ``metadata`` merged in, then one entry per column."""
    sidecar = {"Description": about, **(metadata or {}), **describe_columns(columns, extra)}
    return json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n"


def write_tsv(
    path: Path,
    frame: pd.DataFrame,
    about: str,
    extra: dict[str, str] | None = None,
    metadata: dict | None = None,
) -> None:
    """The TSV (``n/a`` for missing, 6 significant digits) and its sidecar (:func:`tsv_sidecar`;
    an undocumented column fails before anything is written)."""
    sidecar = tsv_sidecar(about, list(frame.columns), extra, metadata)
    atomic_write_text(
        path, frame.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")
    )
    atomic_write_text(sidecar_path(path), sidecar)


def write_nifti(path: Path, image: nib.Nifti1Image, about: str, units: str, **metadata) -> None:
    """The map and its sidecar (``Description``, ``Units``, then ``metadata``: threshold, source…)."""
    atomic_write_bytes(path, nifti_gz_bytes(image))
    sidecar = {"Description": about, "Units": units, **metadata}
    atomic_write_text(
        sidecar_path(path), json.dumps(sidecar, indent=2, ensure_ascii=False, default=str) + "\n"
    )


def write_tsv_sidecar(
    path: Path, about: str, columns: list[str], extra: dict[str, str] | None = None
) -> None:
    """The sidecar alone, for a TSV written elsewhere (``embeddings.tsv``)."""
    atomic_write_text(sidecar_path(path), tsv_sidecar(about, columns, extra))
