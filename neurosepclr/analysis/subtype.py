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

With ``cohort=`` the fitted subtypes of an earlier ``subtype`` call assign another preprocessed cohort
(``predict``, no refit) and subjects that were in training (same ID or same image content) are flagged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neurosepclr.errors import InputDataError, MissingInputError
from neurosepclr.io import (
    atomic_write_bytes,
    atomic_write_text,
    nifti_gz_bytes,
    tsv_text,
    write_dataset_description,
)

log = logging.getLogger("neurosepclr")
CONTROL_LABEL = "control"


@dataclass
class SubtypeOptions:
    k: str | int = "auto"
    k_range: tuple[int, int] = (2, 6)
    method: str = "kmeans"
    standardise: str = "controls"
    directions: bool = True
    atlases: list[str] = field(default_factory=lambda: ["aal"])
    user_atlases: list[tuple[Path, Path]] = field(default_factory=list)
    saliency: str = "integrated_gradients"
    checkpoint: str = "best"
    n_resamples: int = 20
    null_draws: int = 5
    confidence: float = 0.7
    per_subject_maps: bool = False
    device: str = "auto"
    seed: int = 0
    report: bool = True


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


def subtype(
    run_dir: str | Path, out_dir: str | Path | None = None, options: SubtypeOptions | None = None
) -> dict:
    """Subtype the patients of a trained run; returns a summary (K, sizes, output paths)."""
    from neurosepclr.analysis.subtyping import SalientSubtyper, stability_table, subtyper_to_dict
    from neurosepclr.training.inference import load_run
    from neurosepclr.training.loop import resolve_device, subject_frame, write_embeddings
    from neurosepclr.training.probes import representations

    options = options or SubtypeOptions()
    run = load_run(run_dir, options.checkpoint)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_dataset_description(out, "neurosepclr subtypes", "neurosepclr subtype", run.run_dir)
    device = resolve_device(options.device)
    data = run.cohort()
    split_frame = data.table[["participant_id", "session_id"]].merge(
        run.split[["participant_id", "session_id", "split"]], on=["participant_id", "session_id"], how="left"
    )
    if split_frame["split"].isna().any():
        missing = split_frame.loc[split_frame["split"].isna(), "participant_id"].iloc[0]
        raise InputDataError(f"{missing}: in the derivatives but not in {run.run_dir / 'split.tsv'}")
    split = split_frame["split"].to_numpy(dtype=str)
    model = run.model.to(device)
    common, salient = representations(model, data.volumes, device)
    base = subject_frame(data.table, split)
    write_embeddings(out / "embeddings.tsv", data.table, split, common, salient)

    is_target = data.is_target.numpy()
    fit_rows = is_target & (split == "train")
    train_controls = ~is_target & (split == "train")
    if options.standardise == "controls" and train_controls.sum() < 2:
        raise InputDataError(
            f"{run.run_dir}: only {int(train_controls.sum())} training controls, too few to standardise "
            "against (use --standardise patients)"
        )
    if options.standardise == "controls" and train_controls.sum() < 2 * salient.shape[1]:
        log.warning(
            "%d training controls for a %d-dimensional salient space: the controls' covariance is "
            "poorly estimated; compare with --standardise patients (docs/training.md)",
            int(train_controls.sum()),
            salient.shape[1],
        )
    reference = salient[train_controls]  # used by the subtyper only with standardise="controls"
    if fit_rows.sum() < 4:
        raise InputDataError(
            f"{run.run_dir}: only {int(fit_rows.sum())} training patients, too few to subtype"
        )
    if options.k != "auto" and int(options.k) * 2 > fit_rows.sum():
        raise InputDataError(f"--k {options.k}: {int(fit_rows.sum())} training patients are too few for it")
    try:
        stability = stability_table(
            salient[fit_rows],
            range(options.k_range[0], options.k_range[1] + 1),
            options.method,
            options.n_resamples,
            options.seed,
            options.standardise,
            reference,
            options.directions,
            options.null_draws,
        )
    except ValueError as exc:
        raise InputDataError(f"--k-range {options.k_range[0]}-{options.k_range[1]}: {exc}") from None
    if options.null_draws > 0 and stability["score"].max() <= 0:
        log.warning(
            "no K in %d-%d is more reproducible than structureless data with the patients' covariance "
            "(best null-referenced score %.3f, stability.tsv): the salient space shows no subtypes",
            options.k_range[0],
            options.k_range[1],
            stability["score"].max(),
        )
    k = int(stability.loc[stability["chosen"], "k"].iloc[0]) if options.k == "auto" else int(options.k)
    stability["chosen"] = stability["k"] == k
    _write_tsv(out / "stability.tsv", stability)

    subtyper = SalientSubtyper(
        k,
        options.method,
        options.standardise,
        options.directions,
        confidence=options.confidence,
        random_state=options.seed,
    )
    subtyper.fit(salient[fit_rows], reference=reference)
    index_names, names = _label_names(subtyper.labels_, k)
    subtypes = _assign(subtyper, salient, base, is_target, index_names, names, options.confidence)
    subtypes["in_training"] = split == "train"
    _write_tsv(out / "subtypes.tsv", subtypes)
    _write_tsv(out / "demographics.tsv", demographics(subtypes, data.table))
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

    # saliency: attribution of the distance from the background's null point
    from neurosepclr.analysis.saliency import attribute, group_maps, map_image, region_table

    background_point = torch.from_numpy(reference.mean(axis=0)).float()
    whitening = None
    if options.standardise == "controls":  # the controls' metric the subtypes were found in
        whitening = torch.from_numpy(subtyper.whitening_).float()
    baseline = data.volumes[torch.from_numpy(train_controls)].mean(dim=0, keepdim=True)
    log.info("saliency (%s) of %d subjects", options.saliency, len(data))
    attributions = attribute(
        model,
        data.volumes,
        background_point,
        baseline,
        method=options.saliency,
        whitening=whitening,
        device=device,
    )
    labels = subtypes["subtype"].to_numpy(dtype=object)
    maps = group_maps(attributions, labels, control_rows=~is_target)
    for folder in ("maps", "tables"):  # a rerun with another K must not leave the old subtypes' files
        (out / folder).mkdir(exist_ok=True)
        for stale in (out / folder).glob("subtype-*"):
            stale.unlink()
    atlas_list = _atlases(options)
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    for label, group in maps.items():
        for desc, key in (("saliency", "saliency"), ("signedsaliency", "signed"), ("saliencyz", "zmap")):
            atomic_write_bytes(
                out / "maps" / f"subtype-{label}_desc-{desc}_map.nii.gz",
                nifti_gz_bytes(map_image(group[key], data.affine)),
            )
        for atlas in atlas_list:
            table = region_table(group["saliency"], group["signed"], data.affine, atlas)
            stem = f"subtype-{label}_atlas-{atlas.name}_regions"
            _write_tsv(out / "tables" / f"{stem}.tsv", table)
            atomic_write_text(
                out / "tables" / f"{stem}.json",
                json.dumps({"atlas": atlas.name, "licence": atlas.licence, "ranked_by": "mean_abs_saliency"})
                + "\n",
            )
            tables.setdefault(label, {})[atlas.name] = table
    if options.per_subject_maps:
        (out / "maps" / "subjects").mkdir(exist_ok=True)
        for row, values in zip(base.itertuples(), attributions, strict=True):
            session = f"_ses-{row.session_id}" if isinstance(row.session_id, str) and row.session_id else ""
            atomic_write_bytes(
                out / "maps" / "subjects" / f"{row.participant_id}{session}_desc-saliency_map.nii.gz",
                nifti_gz_bytes(map_image(values, data.affine)),
            )
    names = sorted(names, key=lambda n: int(n[1:]))
    summary = {"k": k, "names": names, "out": str(out), "sizes": subtypes["subtype"].value_counts().to_dict()}
    if options.report:
        from neurosepclr.analysis.report import write_report

        summary["report"] = str(
            write_report(out, run, data, subtypes, stability, maps, tables, atlas_list, salient, options)
        )
    return summary


def _assign(subtyper, salient, base, is_target, index_names, names, confidence) -> pd.DataFrame:
    """subtypes.tsv rows: subtype, probability of it, distance to its centre, confident, p_<S>."""
    probabilities = subtyper.predict_proba(salient)
    index = subtyper.predict(salient)
    distances = subtyper.transform(salient)[np.arange(len(index)), index]
    frame = base.copy()
    frame["subtype"] = np.where(is_target, index_names[index], CONTROL_LABEL)
    frame["probability"] = np.where(is_target, probabilities[np.arange(len(index)), index], np.nan)
    frame["distance"] = np.where(is_target, distances, np.nan)
    frame["confident"] = np.where(is_target, frame["probability"] >= confidence, False)
    for position, name in enumerate(index_names):
        frame[f"p_{name}"] = np.where(is_target, probabilities[:, position], np.nan)
    ordered = [f"p_{n}" for n in sorted(names, key=lambda n: int(n[1:]))]
    return frame[[c for c in frame.columns if not c.startswith("p_")] + ordered]


def _atlases(options: SubtypeOptions) -> list:
    from neurosepclr.atlases import load_atlas, load_label_atlas

    atlases = [load_atlas(name) for name in options.atlases]
    for image, table in options.user_atlases:
        atlases.append(load_label_atlas(image, table, Path(image).name.split(".")[0].replace("_", "")))
    return atlases


def predict_cohort(run_dir: str | Path, cohort_dir: str | Path, out_dir: str | Path | None = None,
                   subtype_dir: str | Path | None = None, device: str = "auto") -> dict:  # fmt: skip
    """Assign a new preprocessed cohort to the subtypes fitted by an earlier ``subtype`` call."""
    from neurosepclr.analysis.subtyping import subtyper_from_dict
    from neurosepclr.training.inference import load_run, training_membership
    from neurosepclr.training.loop import resolve_device, subject_frame, write_embeddings
    from neurosepclr.training.probes import representations

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
    device_ = resolve_device(device)
    common, salient = representations(run.model.to(device_), data.volumes, device_)
    in_training = training_membership(run, data.table, data.manifest["sha256"])
    split = np.where(in_training, "train", "new")
    base = subject_frame(data.table, split)
    write_embeddings(out / "embeddings.tsv", data.table, split, common, salient)
    names = np.array(fitted["names"], dtype=object)
    subtypes = _assign(
        subtyper, salient, base, data.is_target.numpy(), names, list(names), subtyper.confidence
    )
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
