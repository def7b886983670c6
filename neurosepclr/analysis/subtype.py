"""``neurosepclr subtype``: a trained run → subtypes, saliency maps, atlas tables and a report.

Outputs (default folder ``RUN_DIR/subtype``)::

    embeddings.tsv            common_k / salient_k of every subject (model in eval mode)
    stability.tsv             one row per K: split-half stability, silhouette, chosen
    subtypes.tsv              subtype ("control" for controls), probabilities, confidence, in_training
    demographics.tsv          n, age, sex and site per subtype (and controls)
    subtype_model.json        the fitted subtyper as plain JSON (used by --cohort)
    maps/subtype-<S>_desc-{saliency,signedsaliency,saliencyz}_map.nii.gz   template space
    tables/subtype-<S>_atlas-<A>_regions.tsv (+ .json with the atlas licence)
    figures/*.png, report.html

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

from neurosepclr.analysis.evaluate import probe_table
from neurosepclr.analysis.report import ReportContent, write_report
from neurosepclr.analysis.saliency import attribute, group_maps, map_image, region_table, saliency_rows
from neurosepclr.atlases import LICENCES, load_atlas, load_label_atlas
from neurosepclr.clustering import SalientSubtyper, stability_table, subtyper_from_dict, subtyper_to_dict
from neurosepclr.compute import representations, resolve_device
from neurosepclr.config import Config, SubtypeConfig
from neurosepclr.errors import InputDataError, MissingInputError
from neurosepclr.io import (
    atomic_write_bytes,
    atomic_write_text,
    nifti_gz_bytes,
    tsv_text,
    write_dataset_description,
)
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


def _write_tsv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, tsv_text(frame))


@dataclass
class Embedded:
    """A run's cohort in its salient and common spaces, with the training split and reference rows."""

    data: CohortTensors
    split: np.ndarray
    common: np.ndarray
    salient: np.ndarray

    @property
    def is_target(self) -> np.ndarray:
        return self.data.is_target.numpy()

    @property
    def fit_rows(self) -> np.ndarray:
        """The training patients: the subtypes are fitted on them alone."""
        return self.is_target & (self.split == "train")

    @property
    def reference_rows(self) -> np.ndarray:
        """The training controls: the reference the salient coordinates are whitened against."""
        return ~self.is_target & (self.split == "train")


def embed(run: TrainedRun, device: torch.device) -> Embedded:
    """Step 1: every subject of the run's cohort through the trained encoders (eval mode)."""
    data = run.cohort()
    split_frame = data.table[["participant_id", "session_id"]].merge(
        run.split[["participant_id", "session_id", "split"]], on=["participant_id", "session_id"], how="left"
    )
    if split_frame["split"].isna().any():
        missing = split_frame.loc[split_frame["split"].isna(), "participant_id"].iloc[0]
        raise InputDataError(f"{missing}: in the derivatives but not in {run.run_dir / 'split.tsv'}")
    common, salient = representations(run.model.to(device), data.volumes, device)
    return Embedded(data, split_frame["split"].to_numpy(dtype=str), common, salient)


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
    embedded: Embedded, k: int, settings: SubtypeConfig, seed: int
) -> tuple[SalientSubtyper, pd.DataFrame, list[str]]:
    """Step 3: the subtyper fitted on the training patients; every subject assigned (subtypes.tsv)."""
    subtyper = SalientSubtyper(
        k,
        settings.method,
        settings.standardise,
        settings.cluster_directions(),
        confidence=settings.confidence,
        random_state=seed,
    )
    subtyper.fit(embedded.salient[embedded.fit_rows], reference=embedded.salient[embedded.reference_rows])
    index_names, names = _label_names(subtyper.labels_, k)
    base = subject_frame(embedded.data.table, embedded.split)
    subtypes = _assign(subtyper, embedded.salient, base, embedded.is_target, index_names, names)
    subtypes["in_training"] = embedded.split == "train"
    return subtyper, subtypes, names


def saliency_maps(
    run: TrainedRun,
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
        run.model,
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


def write_maps_and_tables(
    out: Path, maps: dict, affine: np.ndarray, atlases: list, feature: str | None = None
) -> dict:
    """Step 5: NIfTI maps on the template grid and one region table per subtype and atlas (for one
    input ``feature``, with a ``feature-`` entity in the names, when given)."""
    entity = f"_feature-{feature.replace('_', '')}" if feature else ""
    for folder in ("maps", "tables"):  # a rerun with another K must not leave the old subtypes' files
        (out / folder).mkdir(exist_ok=True)
        for stale in (out / folder).glob("subtype-*") if feature is None else ():
            stale.unlink()
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    for label, group in maps.items():
        for desc, key in (("saliency", "saliency"), ("signedsaliency", "signed"), ("saliencyz", "zmap")):
            atomic_write_bytes(
                out / "maps" / f"subtype-{label}{entity}_desc-{desc}_map.nii.gz",
                nifti_gz_bytes(map_image(group[key], affine)),
            )
        for atlas in atlases:
            table = region_table(group["saliency"], group["signed"], affine, atlas)
            stem = f"subtype-{label}{entity}_atlas-{atlas.name}_regions"
            _write_tsv(out / "tables" / f"{stem}.tsv", table)
            atomic_write_text(
                out / "tables" / f"{stem}.json",
                json.dumps({"atlas": atlas.name, "licence": atlas.licence, "ranked_by": "mean_abs_saliency"})
                + "\n",
            )
            tables.setdefault(label, {})[atlas.name] = table
    return tables


def write_subject_maps(out: Path, base: pd.DataFrame, attributions: np.ndarray, affine: np.ndarray) -> None:
    (out / "maps" / "subjects").mkdir(exist_ok=True)
    for row, values in zip(base.itertuples(), attributions, strict=True):
        session = f"_ses-{row.session_id}" if isinstance(row.session_id, str) and row.session_id else ""
        atomic_write_bytes(
            out / "maps" / "subjects" / f"{row.participant_id}{session}_desc-saliency_map.nii.gz",
            nifti_gz_bytes(map_image(values, affine)),
        )


def subtype(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    config: Config | None = None,
    derivatives: str | Path | None = None,
    report: bool = True,
) -> dict:
    """Subtype the patients of a trained run with the ``subtype`` settings of ``config``; returns a
    summary (K, sizes, output paths). ``derivatives``: where the run's derivatives are now, if moved."""
    config = config or Config()
    settings = config.subtype
    atlases = resolve_atlases(settings.atlases)
    run = load_run(run_dir, settings.checkpoint, derivatives)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_description(out, "neurosepclr subtypes", "neurosepclr subtype", run.run_dir)
    device = resolve_device(config.train.device)

    embedded = embed(run, device)
    write_embeddings(
        out / "embeddings.tsv", embedded.data.table, embedded.split, embedded.common, embedded.salient
    )
    check_group_sizes(embedded, settings, run.run_dir)
    k, stability = choose_k(embedded, settings, config.seed)
    _write_tsv(out / "stability.tsv", stability)
    subtyper, subtypes, names = fit_subtypes(embedded, k, settings, config.seed)
    _write_tsv(out / "subtypes.tsv", subtypes)
    _write_tsv(out / "demographics.tsv", demographics(subtypes, embedded.data.table))
    model_json = {
        "subtyper": subtyper_to_dict(subtyper),
        "names": names,
        "k": k,
        "run": str(run.run_dir.resolve()),
        "checkpoint": run.checkpoint.name,
        "checkpoint_step": run.step,
    }
    atomic_write_text(out / "subtype_model.json", json.dumps(model_json, indent=2) + "\n")
    log.info(
        "K = %d subtypes (%s)", k, ", ".join(f"{n}: {int((subtypes['subtype'] == n).sum())}" for n in names)
    )

    attributions, maps, per_feature, attributed = saliency_maps(
        run, embedded, subtyper, subtypes, settings, device, config.seed
    )
    tables = write_maps_and_tables(out, maps, embedded.data.affine, atlases)
    saliency_record = {"method": settings.saliency, "subjects_attributed": attributed}
    atomic_write_text(out / "maps" / "saliency.json", json.dumps(saliency_record, indent=2) + "\n")
    for feature, feature_maps in per_feature.items():
        write_maps_and_tables(out, feature_maps, embedded.data.affine, atlases, feature)
    if settings.per_subject_maps:
        write_subject_maps(
            out, subject_frame(embedded.data.table, embedded.split), attributions, embedded.data.affine
        )
    names = sorted(names, key=lambda n: int(n[1:]))
    summary = {"k": k, "names": names, "out": str(out), "sizes": subtypes["subtype"].value_counts().to_dict()}
    if report:
        table = embedded.data.table
        embeddings = pd.read_csv(out / "embeddings.tsv", sep="\t", dtype={"participant_id": str})
        columns = [c for c in ("participant_id", "group", "age", "sex", "site") if c in table]
        content = ReportContent(
            out=out,
            run=run,
            table=table,
            grid_shape=tuple(embedded.data.volumes.shape[2:]),
            subtypes=subtypes,
            stability=stability,
            maps=maps,
            tables=tables,
            atlases=atlases,
            salient=embedded.salient,
            probes=probe_table(embeddings, table[columns], config.seed),
            settings=settings,
        )
        summary["report"] = str(write_report(content))
    return summary


def _assign(subtyper, salient, base, is_target, index_names, names) -> pd.DataFrame:
    """subtypes.tsv rows: subtype, probability of it, distance to its centre, confident, p_<S>."""
    probabilities = subtyper.predict_proba(salient)
    index = subtyper.predict(salient)
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
    in_training = training_membership(run, data.table, data.manifest["sha256"])
    split = np.where(in_training, "train", "new")
    base = subject_frame(data.table, split)
    write_embeddings(out / "embeddings.tsv", data.table, split, common, salient)
    names = np.array(fitted["names"], dtype=object)
    subtypes = _assign(subtyper, salient, base, data.is_target.numpy(), names, list(names))
    subtypes["in_training"] = in_training
    _write_tsv(out / "subtypes.tsv", subtypes)
    _write_tsv(out / "demographics.tsv", demographics(subtypes, data.table))
    if in_training.any():
        log.warning(
            "%d subject(s) of %s were in the training split (same ID or same image): %s; "
            "their assignment is not an independent test",
            int(in_training.sum()),
            cohort_dir,
            ", ".join(data.table.loc[in_training, "participant_id"].head(10)),
        )
    return {"out": str(out), "n": len(subtypes), "in_training": int(in_training.sum())}
