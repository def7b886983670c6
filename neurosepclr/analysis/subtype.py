"""``neurosepclr subtype``: a trained run → subtypes, saliency maps, atlas tables and a report.

Outputs (default folder ``RUN_DIR/subtype``), each TSV and NIfTI with a JSON sidecar::

    embeddings.tsv            common_k / salient_k of every subject (model in eval mode)
    stability.tsv             one row per K: split-half stability, silhouette, score above noise, chosen
    subtypes.tsv              subtype ("control" for controls), assignment frequency over bootstrap
                              refits, nearest other subtype, probabilities, in_training
    demographics.tsv          n, age, sex and site per subtype (and controls)
    probes.tsv, quality.tsv   held-out probes with chance and intervals; the report's quality box
    agreement.tsv             saliency map against effect-size map, per subtype
    subtype_model.json        the fitted subtyper as plain JSON (used by --cohort)
    maps/subtype-<S>_space-<T>_res-<R>_desc-<D>_map.nii.gz    template space:
        res of training (6 mm): saliency, signedsaliency, saliencyz;
        res of the derivatives (2 mm): signedsaliency and saliencyz resampled, effectsize (Cohen's d)
    tables/subtype-<S>_atlas-<A>_regions.tsv        every region by mean |saliency|
    tables/subtype-<S>_desc-{saliency,effectsize}_clusters.tsv   clusters, peaks, atlas names
    patients/<participant>.html, figures/*.png, report.html

Every setting comes from the ``subtype`` section of the config (:class:`~neurosepclr.config.SubtypeConfig`).
With ``cohort=`` the fitted subtypes of an earlier ``subtype`` call assign another preprocessed cohort
(``predict``, no refit) and subjects that were in training (same ID or same image content) are flagged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.clusters import cluster_table, keep_clusters, resample_map
from neurosepclr.analysis.consensus import Consensus, consensus_subtypes, refit_labellings, run_subtyper
from neurosepclr.analysis.effect_size import EffectSizeMaps, effect_size_maps
from neurosepclr.analysis.evaluate import probe_table
from neurosepclr.analysis.quality import (
    assignment_check,
    consensus_check,
    probe_checks,
    quality_table,
    representation_check,
    stability_check,
    warning_checks,
)
from neurosepclr.analysis.report import ReportContent, write_report
from neurosepclr.analysis.representation import (
    LONG_NAMES,
    Embedded,
    LinearEncoder,
    cpca_space,
    encode,
    load_encoder,
    save_encoder,
)
from neurosepclr.analysis.saliency import attribute, group_maps, map_image, region_table, saliency_rows
from neurosepclr.analysis.sidecars import write_nifti, write_tsv, write_tsv_sidecar
from neurosepclr.atlases import LICENCES, load_atlas, load_label_atlas
from neurosepclr.clustering import (
    SalientSubtyper,
    centred_on,
    label_frequencies,
    label_mapping,
    stability_table,
    subtyper_from_dict,
    subtyper_to_dict,
)
from neurosepclr.compute import representations, resolve_device
from neurosepclr.config import Config, SubtypeConfig
from neurosepclr.data.template import SPACE, res_label
from neurosepclr.errors import InputDataError, MissingInputError, UsageError
from neurosepclr.io import atomic_write_text, write_dataset_description
from neurosepclr.runfolder import subject_frame, write_embeddings
from neurosepclr.training.data import CohortTensors, mean_volume
from neurosepclr.training.inference import TrainedRun, load_run, training_membership

log = logging.getLogger("neurosepclr")
CONTROL_LABEL = "control"


def demographics(subtypes: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """n, age mean/SD and the count of each sex and site value per subtype (controls included)."""
    merged = subtypes[["participant_id", "session_id", "subtype"]].merge(
        cohort.drop(columns=["group"], errors="ignore"), on=["participant_id", "session_id"], how="left"
    )
    rows = []
    for label, frame in merged.groupby("subtype", sort=True):
        row: dict = {"subtype": label, "n": len(frame)}
        if "age" in frame:
            age = pd.to_numeric(frame["age"], errors="coerce")
            row |= {"age_mean": age.mean(), "age_sd": age.std()}
        for column in ("sex", "site"):
            if column in frame:
                for value, count in frame[column].astype(str).value_counts().sort_index().items():
                    row[f"{column}={value}"] = int(count)
        rows.append(row)
    frame = pd.DataFrame(rows)
    counts = [c for c in frame.columns if "=" in c]
    frame[counts] = frame[counts].fillna(0).astype(int)
    return frame


def _label_names(labels: np.ndarray, k: int) -> tuple[np.ndarray, list[str]]:
    """Cluster indices → names S1..SK, S1 the largest (ties by index) so names are stable."""
    sizes = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda i: (-sizes[i], i))
    names = [""] * k
    for rank, index in enumerate(order):
        names[index] = f"S{rank + 1}"
    return np.array(names, dtype=object), names


def default_out_dir(
    run_dir: str | Path, cohort: str | Path | None = None, fitted: str | Path | None = None
) -> Path:
    """Where outputs go without ``--out``: ``RUN_DIR/subtype``, or for ``--cohort`` a
    ``cohort-<folder name>`` folder inside the fitted subtype folder."""
    subtype_dir = Path(fitted) if fitted is not None else Path(run_dir) / "subtype"
    return subtype_dir if cohort is None else subtype_dir / f"cohort-{Path(cohort).resolve().name}"


def embed(run: TrainedRun, device: torch.device, data: CohortTensors | None = None) -> Embedded:
    """Step 1: every subject of the run's cohort (or of ``data``, read by a run with the same inputs
    and split) through the trained encoders (eval mode)."""
    data = data if data is not None else run.cohort()
    split_frame = data.table[["participant_id", "session_id"]].merge(
        run.split[["participant_id", "session_id", "split"]], on=["participant_id", "session_id"], how="left"
    )
    if split_frame["split"].isna().any():
        missing = split_frame.loc[split_frame["split"].isna(), "participant_id"].iloc[0]
        raise InputDataError(f"{missing}: in the derivatives but not in {run.run_dir / 'split.tsv'}")
    common, salient = representations(run.model.to(device), data.volumes, device)
    return Embedded(data, split_frame["split"].to_numpy(dtype=str), common, salient)


def check_consensus_runs(run: TrainedRun, others: list[TrainedRun], settings: SubtypeConfig) -> None:
    """Runs that enter one consensus must share the derivatives, the split and the input reference."""
    if others and settings.representation != "sepclr":
        raise UsageError("--consensus: several runs are combined in the SepCLR representation only")
    keys = ["participant_id", "session_id", "split"]
    split = run.split[keys].astype(str).sort_values(keys[:2]).reset_index(drop=True)
    for other in others:
        other_split = other.split[keys].astype(str).sort_values(keys[:2]).reset_index(drop=True)
        if not split.equals(other_split):
            raise InputDataError(
                f"{other.run_dir}: its split.tsv differs from {run.run_dir}'s; train every seed with the "
                "same train.split_seed"
            )
        same_inputs = (
            other.config.data.features == run.config.data.features
            and other.config.train.pool == run.config.train.pool
            and other.config.train.input_norm == run.config.train.input_norm
            and sorted(other.manifest["sha256"]) == sorted(run.manifest["sha256"])
        )
        if not same_inputs:
            raise InputDataError(
                f"{other.run_dir}: trained on other inputs than {run.run_dir} (features, pooling, "
                "input normalisation or images differ)"
            )


def check_group_sizes(embedded: Embedded, settings: SubtypeConfig, where: Path) -> None:
    """Refuse cohorts too small for the settings; warn when the controls' covariance is poorly known."""
    n_controls, n_patients = int(embedded.reference_rows.sum()), int(embedded.fit_rows.sum())
    dim = embedded.salient.shape[1]
    if settings.standardise == "controls" and n_controls < 2:
        raise InputDataError(
            f"{where}: only {n_controls} training controls, too few to standardise against "
            "(use --standardise patients)"
        )
    if settings.standardise == "controls" and n_controls < 2 * dim:
        log.warning(
            "%d training controls for a %d-dimensional salient space: the controls' covariance is "
            "poorly estimated; compare with --standardise patients (docs/training.md)",
            n_controls,
            dim,
        )
    if n_patients < 4:
        raise InputDataError(f"{where}: only {n_patients} training patients, too few to subtype")
    if settings.k and settings.k * 2 > n_patients:
        raise InputDataError(f"--k {settings.k}: {n_patients} training patients are too few for it")


def choose_k(embedded: Embedded, settings: SubtypeConfig, seed: int) -> tuple[int, pd.DataFrame]:
    """Step 2: split-half stability and silhouette of every K, referred to structureless data."""
    low, high = settings.k_range
    try:
        stability = stability_table(
            embedded.salient[embedded.fit_rows],
            range(low, high + 1),
            method=settings.method,
            n_resamples=settings.n_resamples,
            random_state=seed,
            standardise=settings.standardise,
            reference=embedded.salient[embedded.reference_rows],
            directions=settings.cluster_directions(),
            null_draws=settings.null_draws,
        )
    except ValueError as exc:
        raise InputDataError(f"--k-range {low}-{high}: {exc}") from None
    if settings.null_draws > 0 and stability["score"].max() <= 0:
        log.warning(
            "no K in %d-%d is more reproducible than structureless data with the patients' covariance "
            "(best null-referenced score %.3f, stability.tsv): the salient space shows no subtypes",
            low,
            high,
            stability["score"].max(),
        )
    k = settings.k or int(stability.loc[stability["chosen"], "k"].iloc[0])
    stability["chosen"] = stability["k"] == k
    return k, stability


def fit_subtypes(
    embedded: Embedded,
    k: int,
    settings: SubtypeConfig,
    seed: int,
    index: np.ndarray | None = None,
    subtyper: SalientSubtyper | None = None,
) -> tuple[SalientSubtyper, pd.DataFrame, list[str], np.ndarray]:
    """Step 3: the subtyper fitted on the training patients; every subject assigned (subtypes.tsv).
    With ``index`` (groups found otherwise, e.g. by consensus) the subtyper is centred on them and
    they are the subtypes reported; ``subtyper``: that fit, when it was already made (the consensus
    fits the first run's). Returns the subtyper, the table, the names and every subject's subtype
    index."""
    if subtyper is None:
        subtyper = run_subtyper(embedded, k, settings, seed)
    fit_rows = embedded.fit_rows
    if index is not None:
        subtyper = centred_on(subtyper, embedded.salient[fit_rows], index[fit_rows])
    else:
        index = subtyper.predict(embedded.salient)
    index_names, names = _label_names(index[fit_rows], k)
    base = subject_frame(embedded.data.table, embedded.split)
    subtypes = _assign(subtyper, embedded.salient, base, embedded.is_target, index_names, names, index)
    subtypes["in_training"] = embedded.split == "train"
    return subtyper, subtypes, names, index


def saliency_maps(
    run: TrainedRun,
    model: torch.nn.Module,
    embedded: Embedded,
    subtyper: SalientSubtyper,
    subtypes: pd.DataFrame,
    settings: SubtypeConfig,
    device: torch.device,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]], dict[str, dict], dict[str, int]]:
    """Step 4: attribution of each subject's (whitened) distance from the controls' centre, averaged
    per subtype over at most ``saliency_sample`` subjects per group (:func:`saliency_rows`). Returns
    the attributions of the subjects attributed (every subject with ``per_subject_maps``) summed over
    the input channels, the per-subtype maps of that sum, with several input features the
    per-subtype maps of each feature, and how many subjects each map averages."""
    data = embedded.data
    background_point = torch.from_numpy(embedded.salient[embedded.reference_rows].mean(axis=0)).float()
    whitening = None
    if settings.standardise == "controls":  # the controls' metric the subtypes were found in
        whitening = torch.from_numpy(subtyper.whitening_).float()
    baseline = mean_volume(data.volumes, np.flatnonzero(embedded.reference_rows)).float()
    labels = subtypes["subtype"].to_numpy(dtype=object)
    controls = ~embedded.is_target
    limit = 0 if settings.per_subject_maps else settings.saliency_sample
    rows = saliency_rows(labels, controls, limit, seed)
    log.info(
        "saliency (%s) of %d of %d subjects (at most %s per subtype and of the controls)",
        settings.saliency,
        len(rows),
        len(data),
        limit or "all",
    )
    attributions = attribute(
        model,
        data.volumes[torch.from_numpy(rows)] if len(rows) < len(data) else data.volumes,
        background_point,
        baseline,
        method=settings.saliency,
        whitening=whitening,
        device=device,
    )
    labels, controls = labels[rows], controls[rows]
    attributed = {"limit_per_group": limit, "controls": int(controls.sum())}
    names, counts = np.unique(labels[~controls].astype(str), return_counts=True)
    attributed |= {str(name): int(count) for name, count in zip(names, counts, strict=True)}
    features = run.config.data.features
    per_feature = {}
    if len(features) > 1:
        per_feature = {f: group_maps(attributions[:, c], labels, controls) for c, f in enumerate(features)}
    combined = attributions.sum(axis=1)  # signed: the channels' shares of one total (integrated gradients)
    magnitude = np.abs(attributions).sum(axis=1)  # unsigned: channels of opposite sign do not cancel
    return combined, group_maps(combined, labels, controls, absolute=magnitude), per_feature, attributed


def map_path(out: Path, label: str, desc: str, resolution: str, feature: str | None = None) -> Path:
    """``maps/subtype-<S>[_feature-<F>]_space-<template>_res-<R>_desc-<D>_map.nii.gz``."""
    entity = f"_feature-{feature.replace('_', '')}" if feature else ""
    return out / "maps" / f"subtype-{label}{entity}_space-{SPACE}_res-{resolution}_desc-{desc}_map.nii.gz"


def grid_resolution(affine: np.ndarray) -> str:
    return res_label(float(np.round(abs(affine[0, 0]), 3)))


def clear_subtype_outputs(out: Path) -> None:
    """A rerun with another K must not leave the old subtypes' maps, tables or patient pages."""
    for folder in ("maps", "tables", "patients", "viewer"):
        (out / folder).mkdir(exist_ok=True)
        for stale in (out / folder).glob("subtype-*" if folder != "patients" else "*.html"):
            stale.unlink()


MAP_DESCRIPTIONS = {
    "saliency": ("mean absolute attribution (subtype.saliency) of the subtype's patients", "arbitrary"),
    "signedsaliency": (
        "mean signed attribution (subtype.saliency) of the subtype's patients: their share "
        "of their (whitened) distance from the controls' salient centre",
        "arbitrary",
    ),
    "saliencyz": (
        "one-sided Welch test per voxel of the subtype's mean |attribution| against the "
        "controls', as a z-score (uncorrected)",
        "z",
    ),
    "effectsize": (
        "Cohen's d of the subtype's patients against the controls on the preprocessed input, "
        "adjusted for covariates (voxel-wise GLM)",
        "Cohen's d",
    ),
}


def write_map(path: Path, values: np.ndarray, affine: np.ndarray, desc: str, **metadata) -> None:
    about, units = MAP_DESCRIPTIONS[desc]
    write_nifti(path, map_image(values, affine), about, units, Space=SPACE, **metadata)


def write_saliency_maps(
    out: Path, maps: dict, affine: np.ndarray, atlases: list, source: dict, feature: str | None = None
) -> dict:
    """Step 5: saliency maps on the training grid and one region table per subtype and atlas (for
    one input ``feature``, with a ``feature-`` entity in the names, when given)."""
    entity = f"_feature-{feature.replace('_', '')}" if feature else ""
    resolution = grid_resolution(affine)
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    for label, group in maps.items():
        for desc, key in (("saliency", "saliency"), ("signedsaliency", "signed"), ("saliencyz", "zmap")):
            write_map(map_path(out, label, desc, resolution, feature), group[key], affine, desc, **source)
        for atlas in atlases:
            table = region_table(group["saliency"], group["signed"], affine, atlas)
            write_tsv(
                out / "tables" / f"subtype-{label}{entity}_atlas-{atlas.name}_regions.tsv",
                table,
                f"subtype {label}: every region of atlas {atlas.name} by mean |saliency| (maps resampled "
                "trilinearly to the atlas grid)",
                metadata={"atlas": atlas.name, "licence": atlas.licence, "ranked_by": "mean_abs_saliency"},
            )
            tables.setdefault(label, {})[atlas.name] = table
    return tables


def write_subject_maps(out: Path, base: pd.DataFrame, attributions: np.ndarray, affine: np.ndarray) -> dict:
    """One saliency map per attributed subject; returns participant (and session) → path."""
    (out / "maps" / "subjects").mkdir(exist_ok=True)
    resolution, paths = grid_resolution(affine), {}
    for row, values in zip(base.itertuples(), attributions, strict=True):
        session = f"_ses-{row.session_id}" if isinstance(row.session_id, str) and row.session_id else ""
        path = (
            out
            / "maps"
            / "subjects"
            / (f"{row.participant_id}{session}_space-{SPACE}_res-{resolution}_desc-saliency_map.nii.gz")
        )
        write_nifti(
            path,
            map_image(values, affine),
            "this subject's attribution (subtype.saliency)",
            "arbitrary",
            Space=SPACE,
        )
        paths[(row.participant_id, row.session_id)] = path
    return paths


@dataclass
class MapsAtAnalysisGrid:
    """Per subtype on the derivatives' grid: signed saliency and its z (resampled), Cohen's d, and
    the versions drawn and clustered (thresholded, clusters of at least ``min_cluster_mm3``)."""

    affine: np.ndarray
    shape: tuple[int, ...]
    signed: dict[str, np.ndarray]
    zmap: dict[str, np.ndarray]
    effect: EffectSizeMaps
    mask: np.ndarray
    settings: SubtypeConfig

    @property
    def feature(self) -> str:
        """The input feature whose effect sizes the report shows (the first of data.features)."""
        return next(iter(self.effect.d))

    def shown_saliency(self, label: str) -> np.ndarray:
        """Signed saliency where the saliency test passes, in clusters large enough."""
        passes = self.zmap[label] >= self.settings.saliency_threshold
        return keep_clusters(self.signed[label], passes, self.affine, self.settings.min_cluster_mm3)

    def shown_effect(self, label: str) -> np.ndarray:
        """Cohen's d as drawn and clustered (:func:`shown_effect_size`)."""
        feature = self.feature
        return shown_effect_size(
            self.effect.d[feature][label], self.effect.t[feature][label], self.effect, self.settings
        )


EFFECT_SIZE_P = 0.001  # the effect-size maps are drawn where |d| >= the threshold and p < this


def shown_effect_size(
    d: np.ndarray, t: np.ndarray, effect: EffectSizeMaps, settings: SubtypeConfig
) -> np.ndarray:
    """Cohen's d where |d| reaches ``effect_size_threshold`` and p < 0.001 (two-sided, uncorrected,
    at the GLM's degrees of freedom), in clusters of at least ``min_cluster_mm3``; 0 elsewhere."""
    from scipy import stats

    t_threshold = stats.t.isf(EFFECT_SIZE_P / 2, max(effect.degrees_of_freedom, 1))
    passes = (np.abs(d) >= settings.effect_size_threshold) & (np.abs(t) >= t_threshold)
    return keep_clusters(d, passes, effect.affine, settings.min_cluster_mm3)


def effect_size_clusters(
    shown: np.ndarray, affine: np.ndarray, atlases: list, settings: SubtypeConfig
) -> pd.DataFrame:
    """The cluster table of a drawn effect-size map: both signs, largest first, numbered."""
    effect = pd.concat(
        [
            cluster_table(shown, affine, settings.effect_size_threshold, atlases, sign=sign,
                          min_volume_mm3=settings.min_cluster_mm3, stat_name="d")
            for sign in (-1, 1)
        ],
        ignore_index=True,
    )  # fmt: skip
    if len(effect):
        effect = effect.sort_values("volume_mm3", ascending=False, kind="stable").reset_index(drop=True)
        effect["cluster"] = np.arange(1, len(effect) + 1)
    return effect


def analysis_grid_maps(
    out: Path,
    embedded: Embedded,
    maps: dict,
    subtypes: pd.DataFrame,
    rows: np.ndarray,
    settings: SubtypeConfig,
    features: tuple[str, ...],
    source: dict,
) -> MapsAtAnalysisGrid:
    """Step 6: effect-size maps on the preprocessed inputs, and the saliency maps resampled onto
    their grid (trilinear), written with their sidecars."""
    labels = subtypes["subtype"].to_numpy(dtype=object)
    effect = effect_size_maps(
        embedded.data.root, embedded.data.table, rows, labels, features, tuple(settings.covariates)
    )
    affine, shape = effect.affine, effect.shape
    mask = np.ones(shape, dtype=bool) if effect.mask is None else effect.mask
    resolution = grid_resolution(affine)
    signed, zmap = {}, {}
    for label, group in maps.items():
        signed[label] = resample_map(group["signed"], embedded.data.affine, affine, shape) * mask
        zmap[label] = resample_map(group["zmap"], embedded.data.affine, affine, shape) * mask
        for desc, values in (("signedsaliency", signed[label]), ("saliencyz", zmap[label])):
            write_map(
                map_path(out, label, desc, resolution),
                values,
                affine,
                desc,
                ResampledFrom=grid_resolution(embedded.data.affine) + " mm training grid (trilinear)",
                Threshold=f"z >= {settings.saliency_threshold}" if desc == "saliencyz" else None,
                **source,
            )
    threshold = f"|d| >= {settings.effect_size_threshold} and p < {EFFECT_SIZE_P} (uncorrected)"
    for feature, per_subtype in effect.d.items():
        name = feature if len(features) > 1 else None
        for label, values in per_subtype.items():
            write_map(
                map_path(out, label, "effectsize", resolution, name),
                values,
                affine,
                "effectsize",
                Threshold=threshold,
                Covariates=effect.covariates,
                Subjects=effect.counts,
                DegreesOfFreedom=effect.degrees_of_freedom,
                Input=feature,
                **source,
            )
    return MapsAtAnalysisGrid(affine, shape, signed, zmap, effect, mask, settings)


def cluster_tables(out: Path, grid: MapsAtAnalysisGrid, atlases: list, settings: SubtypeConfig) -> dict:
    """Step 7: clusters and peaks of each subtype's saliency test and effect-size map (first input
    feature), named with every atlas asked; returns subtype → {"saliency": …, "effectsize": …}."""
    tables = {}
    for label in grid.signed:
        saliency = cluster_table(
            np.where(grid.shown_saliency(label) != 0, grid.zmap[label], 0.0),
            grid.affine,
            settings.saliency_threshold,
            atlases,
            sign=1,
            min_volume_mm3=settings.min_cluster_mm3,
            stat_name="z",
            also={"signedsaliency": grid.signed[label]},
        )
        effect = effect_size_clusters(grid.shown_effect(label), grid.affine, atlases, settings)
        what = {
            "saliency": f"saliency z >= {settings.saliency_threshold}",
            "effectsize": f"|Cohen's d| >= {settings.effect_size_threshold} and p < {EFFECT_SIZE_P} "
            f"(uncorrected) on {grid.feature}",
        }
        for desc, table in (("saliency", saliency), ("effectsize", effect)):
            write_tsv(
                out / "tables" / f"subtype-{label}_desc-{desc}_clusters.tsv",
                table,
                f"subtype {label}: clusters of {what[desc]} (26-connected, at least "
                f"{settings.min_cluster_mm3:g} mm³), largest first, with peaks in MNI mm",
                metadata={"atlases": {a.name: a.licence for a in atlases}},
            )
        tables[label] = {"saliency": saliency, "effectsize": effect}
    return tables


def map_agreement(grid: MapsAtAnalysisGrid, atlas, top: int = 5) -> pd.DataFrame:
    """Per subtype: how many of the ``top`` regions of |saliency| and of |d| are the same, and the
    voxel-wise correlation of |saliency| with |d| inside the brain mask."""
    rows = []
    for label, signed in grid.signed.items():
        d = grid.effect.d[grid.feature][label]
        by_saliency = region_table(signed, signed, grid.affine, atlas)["region_name"].head(top).tolist()
        by_effect = region_table(d, d, grid.affine, atlas)["region_name"].head(top).tolist()
        inside = grid.mask & np.isfinite(d)
        a, b = np.abs(signed[inside]), np.abs(d[inside])
        correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        rows.append(
            {
                "subtype": label,
                "feature": grid.feature,
                "top_regions": top,
                "shared_top_regions": len(set(by_saliency) & set(by_effect)),
                "saliency_top_regions": "; ".join(by_saliency),
                "effect_size_top_regions": "; ".join(by_effect),
                "correlation": correlation,
            }
        )
    return pd.DataFrame(rows)


class _WarningCollector(logging.Handler):
    """Keeps the text of every warning the ``neurosepclr`` logger emits while attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def training_warnings(run_dir: Path) -> list[str]:
    """Warnings in the run's training logs (``logs/train*.log``), for the quality box."""
    found = []
    for path in sorted((run_dir / "logs").glob("train*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if " WARNING " in line:
                found.append("train: " + line.split(" WARNING ", 1)[1])
    return found


def bootstrap_frequencies(
    subtyper: SalientSubtyper, embedded: Embedded, settings: SubtypeConfig, seed: int
) -> np.ndarray | None:
    """(subjects, K): the share of ``settings.bootstrap`` refits giving each subject each subtype."""
    if settings.bootstrap == 0:
        return None
    return label_frequencies(refit_labellings(subtyper, embedded, settings, seed), subtyper.n_subtypes)


def add_bootstrap_columns(
    subtypes: pd.DataFrame,
    subtyper: SalientSubtyper,
    embedded: Embedded,
    index: np.ndarray,
    frequency: np.ndarray | None,
    settings: SubtypeConfig,
    index_names: np.ndarray,
) -> np.ndarray | None:
    """Step 3b: each patient's assignment frequency (over bootstrap refits, or over every run's
    refits for a consensus), the nearest other subtype and its frequency; ``confident`` from the
    frequency. Returns the patients' frequencies (None without refits)."""
    is_target = embedded.is_target
    rows = np.arange(len(index))
    index = np.where(is_target, index, 0)
    distances = subtyper.transform(embedded.salient)
    distances[rows, index] = np.inf
    nearest_other = distances.argmin(axis=1)
    subtypes["nearest_other_subtype"] = np.where(is_target, index_names[nearest_other], "n/a")
    if frequency is None:
        return None
    subtypes["assignment_frequency"] = np.where(is_target, frequency[rows, index], np.nan)
    subtypes["nearest_other_frequency"] = np.where(is_target, frequency[rows, nearest_other], np.nan)
    subtypes["confident"] = is_target & (frequency[rows, index] >= settings.confidence)
    for position in np.argsort([int(n[1:]) for n in index_names]):
        subtypes[f"freq_{index_names[position]}"] = np.where(is_target, frequency[:, position], np.nan)
    return frequency[rows, index][is_target]


def keep_group_value(subtypes: pd.DataFrame, table: pd.DataFrame, column: str) -> tuple[pd.DataFrame, dict]:
    """``subtypes.tsv`` keeps the participants.tsv group value (AD and MCI stay apart) after ``group``."""
    name = "group_label" if column == "group" else column
    if name not in table or name in subtypes:
        return subtypes, {}
    subtypes.insert(subtypes.columns.get_loc("group") + 1, name, table[name].to_numpy())
    return subtypes, {name: f"the participants.tsv value of {column} (data.group_column), as given"}


def subtype(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    config: Config | None = None,
    derivatives: str | Path | None = None,
    report: bool = True,
    recipe: str = "",
    consensus: list[str | Path] | tuple = (),
) -> dict:
    """Subtype the patients of a trained run with the ``subtype`` settings of ``config``; returns a
    summary (K, sizes, output paths). ``derivatives``: where the run's derivatives are now, if moved;
    ``recipe``: the config file the settings came from, for the report; ``consensus``: other runs
    (seeds) of the same inputs and split, whose consensus with ``run_dir`` gives the subtypes."""
    collector = _WarningCollector()
    logging.getLogger("neurosepclr").addHandler(collector)
    try:
        return _subtype(
            run_dir, out_dir, config or Config(), derivatives, report, recipe, collector, list(consensus)
        )
    finally:
        logging.getLogger("neurosepclr").removeHandler(collector)


@dataclass
class Comparison:
    """The other representation's subtypes beside the reported ones (matched names)."""

    name: str
    labels: np.ndarray  # every subject: a reported subtype name, or "control"
    ari_all: float  # with the reported subtypes, every patient
    ari_heldout: float  # held-out patients only (NaN when there are none)
    alpha: float | None = None


def compare_representations(
    other: Embedded,
    name: str,
    k: int,
    index: np.ndarray,
    index_names: np.ndarray,
    settings,
    seed: int,
    alpha: float | None = None,
) -> Comparison:
    """Subtypes of the other representation (same K, same clustering), named after the reported
    subtypes they overlap most (Hungarian), and their ARI with the reported ones."""
    other_index = run_subtyper(other, k, settings, seed).predict(other.salient)
    patients, held_out = other.is_target, other.is_target & (other.split != "train")
    matched = label_mapping(other_index, np.where(patients, index, -1), k)[other_index]
    labels = np.where(patients, index_names[matched], CONTROL_LABEL)
    ari_all = adjusted_rand_score(index[patients], matched[patients])
    ari_heldout = adjusted_rand_score(index[held_out], matched[held_out]) if held_out.sum() > 1 else np.nan
    return Comparison(name, labels, float(ari_all), float(ari_heldout), alpha)


@dataclass
class Found:
    """Steps 2–3: K, the subtypes and what judges them (refits, the other representation, seeds)."""

    primary: Embedded  # the representation the subtypes were clustered in
    k: int
    stability: pd.DataFrame
    subtyper: SalientSubtyper
    subtypes: pd.DataFrame  # subtypes.tsv before the group value is added
    names: list[str]  # names[i]: cluster index i's name
    frequency: np.ndarray | None  # patients' assignment frequencies
    comparison: Comparison | None = None
    agreed: Consensus | None = None
    cpca: Embedded | None = None
    cpca_encoder: LinearEncoder | None = None
    alphas: pd.DataFrame | None = None

    @property
    def cpca_alpha(self) -> float | None:
        return None if self.alphas is None else float(self.alphas.loc[self.alphas["chosen"], "alpha"].iloc[0])


def find_subtypes(seed_spaces: list[Embedded], settings: SubtypeConfig, seed: int) -> Found:
    """Steps 2–3: the representation (SepCLR's salient space or contrastive PCA of the inputs), K, the
    subtypes (one run's, or the consensus of ``seed_spaces``), each patient's frequency over refits,
    and with ``settings.compare`` the other representation's subtypes beside them."""
    embedded = seed_spaces[0]
    cpca = cpca_encoder = alphas = None
    if settings.representation == "cpca":
        cpca, cpca_encoder, alphas = cpca_space(embedded, settings, settings.k_values(), seed)
    primary = cpca if settings.representation == "cpca" else embedded
    k, stability = choose_k(primary, settings, seed)
    if settings.compare and cpca is None:
        cpca, cpca_encoder, alphas = cpca_space(embedded, settings, [k], seed)
    agreed = consensus_subtypes(seed_spaces, k, settings, seed) if len(seed_spaces) > 1 else None
    subtyper, subtypes, names, index = fit_subtypes(
        primary,
        k,
        settings,
        seed,
        None if agreed is None else agreed.index,
        None if agreed is None else agreed.first_subtyper,
    )
    index_names = np.array(names, dtype=object)
    if agreed is not None:
        frequency = agreed.frequency
    else:
        frequency = bootstrap_frequencies(subtyper, primary, settings, seed)
    frequency = add_bootstrap_columns(subtypes, subtyper, primary, index, frequency, settings, index_names)
    found = Found(
        primary, k, stability, subtyper, subtypes, names, frequency, None, agreed, cpca, cpca_encoder, alphas
    )
    if settings.compare:
        other = "cpca" if settings.representation == "sepclr" else "sepclr"
        found.comparison = compare_representations(
            cpca if other == "cpca" else embedded,
            other,
            k,
            index,
            index_names,
            settings,
            seed,
            found.cpca_alpha if other == "cpca" else None,
        )
        subtypes.insert(subtypes.columns.get_loc("subtype") + 1, f"subtype_{other}", found.comparison.labels)
    return found


def _subtype(
    run_dir, out_dir, config: Config, derivatives, report: bool, recipe: str, collector, consensus_dirs
) -> dict:
    settings = config.subtype
    atlases = resolve_atlases(settings.atlases)
    run = load_run(run_dir, settings.checkpoint, derivatives)
    others = [load_run(d, settings.checkpoint, derivatives) for d in consensus_dirs]
    check_consensus_runs(run, others, settings)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_description(out, "neurosepclr subtypes", "neurosepclr subtype", run.run_dir)
    device = resolve_device(config.train.device)
    seed = config.seed
    source = {
        "Run": str(run.run_dir.resolve()),
        "Checkpoint": run.checkpoint.name,
        "CheckpointStep": run.step,
        "SaliencyMethod": settings.saliency,
        "Representation": settings.representation,
    }
    if others:
        source["ConsensusRuns"] = [str(o.run_dir.resolve()) for o in others]

    embedded = embed(run, device)
    seed_spaces = [embedded] + [embed(other, device, embedded.data) for other in others]
    check_group_sizes(embedded, settings, run.run_dir)
    found = find_subtypes(seed_spaces, settings, seed)
    primary, subtyper, subtypes = found.primary, found.subtyper, found.subtypes
    k, names, stability, frequency = found.k, found.names, found.stability, found.frequency
    comparison, agreed = found.comparison, found.agreed
    write_embeddings(
        out / "embeddings.tsv",
        embedded.data.table,
        embedded.split,
        embedded.common,
        embedded.salient,
        None if found.cpca is None else {"cpca": found.cpca.salient},
    )
    write_tsv_sidecar(
        out / "embeddings.tsv",
        "every subject in the common and salient spaces (eval mode), and in contrastive PCA when computed",
        pd.read_csv(out / "embeddings.tsv", sep="\t", nrows=0).columns.tolist(),
    )
    write_tsv(
        out / "stability.tsv", stability, "K selection: split-half stability and silhouette, above noise"
    )
    if found.alphas is not None:
        write_tsv(
            out / "cpca_alpha.tsv",
            found.alphas,
            "contrastive PCA: alpha chosen by the subtypes' score",
            {"chosen": "the alpha used"},
        )
    if comparison is not None:
        write_tsv(
            out / "representations.tsv",
            representation_table(settings.representation, comparison, found.cpca_alpha),
            "the reported subtypes against the other representation's",
        )
    if agreed is not None:
        write_tsv(
            out / "runs.tsv",
            runs_table([run, *others], agreed),
            "the runs (seeds) of the consensus: agreement with it and with each other",
        )
    subtypes, extra = keep_group_value(subtypes, embedded.data.table, run.config.data.group_column)
    write_tsv(out / "subtypes.tsv", subtypes, "every subject's subtype, with its uncertainty", extra)
    write_tsv(
        out / "demographics.tsv",
        demographics(subtypes, embedded.data.table),
        "subjects, age, sex and site per subtype (and controls)",
    )
    model_json = {
        "subtyper": subtyper_to_dict(subtyper),
        "names": names,
        "k": k,
        "representation": settings.representation,
        "run": str(run.run_dir.resolve()),
        "checkpoint": run.checkpoint.name,
        "checkpoint_step": run.step,
        "consensus_runs": [str(o.run_dir.resolve()) for o in others],
    }
    if settings.representation == "cpca":
        save_encoder(out / "cpca_encoder.npz", found.cpca_encoder)
        model_json["encoder"] = "cpca_encoder.npz"
    atomic_write_text(out / "subtype_model.json", json.dumps(model_json, indent=2) + "\n")
    log.info(
        "K = %d subtypes (%s)", k, ", ".join(f"{n}: {int((subtypes['subtype'] == n).sum())}" for n in names)
    )

    model = found.cpca_encoder if settings.representation == "cpca" else run.model
    attributions, maps, per_feature, attributed = saliency_maps(
        run, model, primary, subtyper, subtypes, settings, device, seed
    )
    # the effect-size maps compare at least 100 subjects per group (all in smaller cohorts)
    labels = subtypes["subtype"].to_numpy(dtype=object)
    sample = settings.saliency_sample and max(settings.saliency_sample, 100)
    rows = saliency_rows(labels, ~embedded.is_target, sample, seed)
    clear_subtype_outputs(out)
    region_tables = write_saliency_maps(out, maps, embedded.data.affine, atlases, source)
    saliency_record = {"method": settings.saliency, "subjects_attributed": attributed}
    atomic_write_text(out / "maps" / "saliency.json", json.dumps(saliency_record, indent=2) + "\n")
    for feature, feature_maps in per_feature.items():
        write_saliency_maps(out, feature_maps, embedded.data.affine, atlases, source, feature)
    features = tuple(run.config.data.features)
    grid = analysis_grid_maps(out, primary, maps, subtypes, rows, settings, features, source)
    clusters = cluster_tables(out, grid, atlases, settings)
    agreement = map_agreement(grid, atlases[0])
    write_tsv(out / "agreement.tsv", agreement, f"saliency map against effect-size map ({atlases[0].name})")
    subject_maps = {}
    if settings.per_subject_maps:
        subject_maps = write_subject_maps(
            out, subject_frame(embedded.data.table, embedded.split), attributions, embedded.data.affine
        )
    names = sorted(names, key=lambda n: int(n[1:]))
    summary = {"k": k, "names": names, "out": str(out), "sizes": subtypes["subtype"].value_counts().to_dict()}
    if comparison is not None:
        summary["comparison"] = {"representation": comparison.name, "ari": comparison.ari_all}
    if agreed is not None:
        summary["consensus"] = {"runs": 1 + len(others), "mean_pairwise_ari": agreed.mean_pairwise_ari}
    if report:
        table = embedded.data.table
        embeddings = pd.read_csv(out / "embeddings.tsv", sep="\t", dtype={"participant_id": str})
        columns = [c for c in ("participant_id", "group", "age", "sex", "site") if c in table]
        probes = probe_table(embeddings, table[columns], seed)
        write_tsv(
            out / "probes.tsv", probes, "held-out linear probes of each space, with chance and 95 % intervals"
        )
        reported = LONG_NAMES[settings.representation] + (" (consensus)" if agreed is not None else "")
        checks = (
            probe_checks(probes)
            + stability_check(stability, k, forced=bool(settings.k))
            + assignment_check(frequency, settings.confidence)
            + consensus_check(None if agreed is None else agreed.mean_pairwise_ari, 1 + len(others))
            + representation_check(
                None if comparison is None else comparison.ari_all,
                reported,
                "" if comparison is None else LONG_NAMES[comparison.name],
            )
            + warning_checks(training_warnings(run.run_dir) + collector.messages)
        )
        write_tsv(out / "quality.tsv", quality_table(checks), "the report's quality box")
        content = ReportContent(
            out=out,
            run=run,
            table=table,
            grid_shape=tuple(embedded.data.volumes.shape[2:]),
            subtypes=subtypes,
            stability=stability,
            maps=maps,
            tables=region_tables,
            atlases=atlases,
            salient=primary.salient,
            probes=probes,
            settings=settings,
            checks=checks,
            k_forced=bool(settings.k),
            recipe=recipe,
            grid=grid,
            clusters=clusters,
            agreement=agreement,
            subject_maps=subject_maps,
            comparison=comparison,
            runs=None if agreed is None else runs_table([run, *others], agreed),
        )
        summary["report"] = str(write_report(content))
    return summary


def representation_table(reported: str, comparison: Comparison, cpca_alpha: float | None) -> pd.DataFrame:
    """representations.tsv: the reported and the compared representation, their ARI, cPCA's alpha."""
    alpha = np.nan if cpca_alpha is None else cpca_alpha
    rows = [
        {
            "representation": reported,
            "role": "reported",
            "ari_all_patients": 1.0,
            "ari_heldout_patients": 1.0,
        },
        {
            "representation": comparison.name,
            "role": "compared",
            "ari_all_patients": comparison.ari_all,
            "ari_heldout_patients": comparison.ari_heldout,
        },
    ]
    frame = pd.DataFrame(rows)
    frame["cpca_alpha"] = np.where(frame["representation"] == "cpca", alpha, np.nan)
    return frame


def runs_table(runs: list[TrainedRun], agreed) -> pd.DataFrame:
    """runs.tsv: each run of the consensus, its seed and checkpoint, its agreement."""
    frame = pd.DataFrame(
        {
            "run_dir": [str(r.run_dir.resolve()) for r in runs],
            "seed": [r.config.seed for r in runs],
            "checkpoint": [r.checkpoint.name for r in runs],
        }
    )
    return pd.concat([frame, agreed.runs.drop(columns="run")], axis=1)


def _assign(subtyper, salient, base, is_target, index_names, names, index=None) -> pd.DataFrame:
    """subtypes.tsv rows: subtype (``index``, else the subtyper's), its probability, the distance to its
    centre, confident, p_<S>."""
    probabilities = subtyper.predict_proba(salient)
    index = subtyper.predict(salient) if index is None else np.where(is_target, index, 0)
    distances = subtyper.transform(salient)[np.arange(len(index)), index]
    frame = base.copy()
    frame["subtype"] = np.where(is_target, index_names[index], CONTROL_LABEL)
    frame["probability"] = np.where(is_target, probabilities[np.arange(len(index)), index], np.nan)
    frame["distance"] = np.where(is_target, distances, np.nan)
    frame["confident"] = np.where(is_target, frame["probability"] >= subtyper.confidence, False)
    for position, name in enumerate(index_names):
        frame[f"p_{name}"] = np.where(is_target, probabilities[:, position], np.nan)
    ordered = [f"p_{n}" for n in sorted(names, key=lambda n: int(n[1:]))]
    return frame[[c for c in frame.columns if not c.startswith("p_")] + ordered]


def check_atlas_names(entries: list[str]) -> None:
    """Refuse unknown atlas names (atlases/manifest.tsv) before any work is done."""
    unknown = [entry for entry in entries if ":" not in entry and entry not in LICENCES]
    if unknown:
        raise MissingInputError(
            f"--atlas: unknown atlas '{unknown[0]}' (known: {', '.join(sorted(LICENCES))})"
        )


def resolve_atlases(entries: list[str]) -> list:
    """Atlases by name (atlases/manifest.tsv) or as ``LABELS.nii.gz:LABELS.tsv``."""
    check_atlas_names(entries)
    atlases = []
    for entry in entries:
        if ":" in entry:
            image, table = entry.split(":", 1)
            atlases.append(
                load_label_atlas(Path(image), Path(table), Path(image).name.split(".")[0].replace("_", ""))
            )
        else:
            atlases.append(load_atlas(entry))
    return atlases


def predict_cohort(
    run_dir: str | Path,
    cohort_dir: str | Path,
    out_dir: str | Path | None = None,
    subtype_dir: str | Path | None = None,
    config: Config | None = None,
) -> dict:
    """Assign a new preprocessed cohort to the subtypes fitted by an earlier ``subtype`` call."""
    config = config or Config()
    run_dir = Path(run_dir)
    subtype_dir = default_out_dir(run_dir, fitted=subtype_dir)
    model_path = subtype_dir / "subtype_model.json"
    if not model_path.is_file():
        raise MissingInputError(f"{model_path}: no fitted subtypes; run neurosepclr subtype {run_dir} first")
    fitted = json.loads(model_path.read_text())
    subtyper = subtyper_from_dict(fitted["subtyper"])
    run = load_run(run_dir, fitted.get("checkpoint", "best.pt").removesuffix(".pt"))
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir, cohort_dir, subtype_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_description(
        out, "neurosepclr subtype assignment", "neurosepclr subtype --cohort", cohort_dir
    )
    data = run.cohort(cohort_dir)
    device = resolve_device(config.train.device)
    common, salient = representations(run.model.to(device), data.volumes, device)
    extra = None
    if fitted.get("representation", "sepclr") == "cpca":  # the fitted subtypes live in contrastive PCA
        extra = {"cpca": encode(load_encoder(subtype_dir / fitted["encoder"]), data.volumes)}
    in_training = training_membership(run, data.table, data.manifest["sha256"])
    split = np.where(in_training, "train", "new")
    base = subject_frame(data.table, split)
    write_embeddings(out / "embeddings.tsv", data.table, split, common, salient, extra)
    write_tsv_sidecar(
        out / "embeddings.tsv",
        "every subject in the common and salient spaces (eval mode)",
        pd.read_csv(out / "embeddings.tsv", sep="\t", nrows=0).columns.tolist(),
    )
    names = np.array(fitted["names"], dtype=object)
    clustered = salient if extra is None else extra["cpca"]
    subtypes = _assign(subtyper, clustered, base, data.is_target.numpy(), names, list(names))
    subtypes["in_training"] = in_training
    subtypes, extra = keep_group_value(subtypes, data.table, run.config.data.group_column)
    write_tsv(out / "subtypes.tsv", subtypes, "subtypes of a new cohort, assigned by an earlier fit", extra)
    write_tsv(
        out / "demographics.tsv",
        demographics(subtypes, data.table),
        "subjects, age, sex and site per subtype (and controls)",
    )
    if in_training.any():
        log.warning(
            "%d subject(s) of %s were in the training split (same ID or same image): %s; "
            "their assignment is not an independent test",
            int(in_training.sum()),
            cohort_dir,
            ", ".join(data.table.loc[in_training, "participant_id"].head(10)),
        )
    return {"out": str(out), "n": len(subtypes), "in_training": int(in_training.sum())}
