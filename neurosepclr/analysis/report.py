"""``report.html``: one self-contained page (figures inlined as PNG, no script, no network) and the
same figures as PNG files under ``figures/``."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from neurosepclr import __version__
from neurosepclr.analysis.quality import REPRESENTATIONS_AGREE
from neurosepclr.analysis.representation import SHORT_NAMES
from neurosepclr.io import atomic_write_bytes, atomic_write_text

CAVEATS = (
    "A salient map shows which voxels the salient encoder relies on to place a patient away from the "
    "controls; it is an attribution of a model, not a measurement of atrophy, and it is only as good as "
    "the control group is matched (age, sex, scanner). Subtypes are clusters of a learned space: check "
    "the stability table, the demographic table (a 'subtype' that is one site or one age band is not a "
    "disease subtype) and the probe table before interpreting them. Research use only; not a medical device."
)


def _figure_bytes(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def k_selection_figure(stability: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.errorbar(
        stability["k"],
        stability["stability_ari_mean"],
        yerr=stability["stability_ari_sd"],
        marker="o",
        label="split-half stability (ARI)",
        capsize=3,
    )
    ax.plot(stability["k"], stability["silhouette"], marker="s", label="silhouette")
    if "null_stability" in stability:
        ax.plot(
            stability["k"],
            stability["null_stability"],
            linestyle=":",
            color="C0",
            label="stability of structureless data",
        )
        ax.plot(stability["k"], stability["score"], marker="^", color="black", label="score (above null)")
        ax.axhline(0.0, color="black", linewidth=0.5)
    chosen = stability[stability["chosen"]]
    ax.axvline(int(chosen["k"].iloc[0]), color="grey", linestyle="--", label="chosen K")
    ax.set_xlabel("number of subtypes K")
    ax.set_ylabel("score")
    ax.set_xticks(stability["k"])
    ax.legend(fontsize=8)
    return fig


def k_selection_text(stability: pd.DataFrame) -> str:
    """How K was scored, and a warning when no K beats structureless data."""
    if "null_stability" not in stability:
        return "<p>K scored by (split-half stability + silhouette) / 2.</p>"
    text = (
        "<p>K scored by how far split-half stability and silhouette exceed their values on "
        "structureless data (a Gaussian with the patients' covariance): (stability − null stability "
        "+ silhouette − null silhouette) / 2.</p>"
    )
    if stability["score"].max() <= 0:
        text += (
            '<p class="warn"><b>No K is more reproducible than structureless data</b>: the salient '
            "space shows no subtypes in this cohort; the groups below are partitions of a continuum.</p>"
        )
    return text


def sizes_figure(subtypes: pd.DataFrame):
    import matplotlib.pyplot as plt

    counts = subtypes["subtype"].value_counts().sort_index()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.bar(counts.index.astype(str), counts.to_numpy(), color="#4477aa")
    ax.set_ylabel("subjects")
    for x, value in enumerate(counts.to_numpy()):
        ax.text(x, value, str(value), ha="center", va="bottom", fontsize=8)
    return fig


def salient_space_figure(salient: np.ndarray, subtypes: pd.DataFrame):
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    coords = PCA(2, random_state=0).fit_transform((salient - salient.mean(0)) / (salient.std(0) + 1e-12))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, title in ((axes[0], "group", "group"), (axes[1], "subtype", "subtype")):
        for value in sorted(subtypes[column].astype(str).unique()):
            rows = (subtypes[column].astype(str) == value).to_numpy()
            ax.scatter(coords[rows, 0], coords[rows, 1], s=12, label=value, alpha=0.8)
        ax.set_title(f"salient space (PCA), coloured by {title}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=8)
    return fig


def training_figure(metrics_path: Path):
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    frame = pd.DataFrame(records)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for column in [c for c in frame.columns if c.startswith("loss/") and frame[c].abs().sum() > 0]:
        axes[0].plot(frame["step"], frame[column], label=column.removeprefix("loss/"), linewidth=1)
    axes[0].set_xlabel("step")
    axes[0].set_title("loss terms")
    axes[0].legend(fontsize=7)
    probes = [c for c in frame.columns if c.startswith("val/")]
    for column in probes:
        values = frame[["step", column]].dropna()
        axes[1].plot(values["step"], values[column], marker="o", label=column.removeprefix("val/"))
    axes[1].set_xlabel("step")
    axes[1].set_title("validation probes")
    if probes:
        axes[1].legend(fontsize=7)
    return fig


BACKGROUND_NOTE = "MNI152 2009a (nilearn's copy); coordinates in mm"


def _cut(values: np.ndarray, affine: np.ndarray) -> tuple[float, float, float]:
    """MNI coordinates of the map's most extreme voxel (the cuts drawn)."""
    peak = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
    return tuple(float(v) for v in (affine @ np.array([*peak, 1.0]))[:3])


def glass_brain(image, threshold: float, title: str, vmax: float | None = None) -> bytes:
    """A signed map's glass brain (left and right marked), symmetric colour scale."""
    from nilearn import plotting

    display = plotting.plot_glass_brain(
        image, threshold=threshold, vmax=vmax, colorbar=True, plot_abs=False, cmap="cold_hot", title=title,
        symmetric_cbar=True,
    )  # fmt: skip
    return _figure_bytes(display.frame_axes.figure)


def stat_map_figures(values: np.ndarray, affine: np.ndarray, threshold: float, vmax: float, title: str):
    """Glass brain and orthogonal slices (annotated with their MNI coordinates) of a signed map,
    drawn above ``threshold`` in absolute value on one colour scale (±``vmax``)."""
    import matplotlib

    matplotlib.use("Agg")
    from nilearn import datasets, plotting

    from neurosepclr.analysis.saliency import map_image

    image = map_image(values, affine)
    vmax = float(max(vmax, threshold * 1.01, 1e-12))
    background = datasets.load_mni152_template(resolution=2)
    glass_png = glass_brain(image, threshold, title, vmax)
    slices = plotting.plot_stat_map(
        image,
        bg_img=background,
        threshold=threshold,
        vmax=vmax,
        cut_coords=_cut(values, affine),
        cmap="cold_hot",
        title=title,
        annotate=True,
        draw_cross=False,
        symmetric_cbar=True,
    )
    slices_png = _figure_bytes(slices.frame_axes.figure)
    return glass_png, slices_png


def subject_figure(path: Path, title: str) -> bytes:
    """Glass brain of one subject's saliency, its top 10 % of |attribution| drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import nibabel as nib

    image = nib.load(path)
    values = np.abs(np.asarray(image.dataobj))
    threshold = float(np.percentile(values[values > 0], 90)) if (values > 0).any() else 0.0
    return glass_brain(image, threshold, title)


def _img(png: bytes, alt: str, css: str = "") -> str:
    encoded = base64.b64encode(png).decode("ascii")
    style = f' class="{css}"' if css else ""
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}"{style}>'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a", border=0, classes="t")


STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
    "img{max-width:100%;display:block;margin:0.5em 0}"
    ".pair{display:flex;gap:1em}.pair>div{flex:1;min-width:0}"
    "table.t{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
    "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "table.q td{text-align:left}"
    ".red{background:#f4c7c3}.amber{background:#fce8b2}.green{background:#b7e1cd}.info{background:#e8eaed}"
    ".licence,.meta{font-size:0.8em;color:#555}.warn{color:#a40000}"
    ".bar{display:inline-block;height:0.8em;background:#4477aa;vertical-align:middle}"
)


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def quality_box(checks: list) -> str:
    """The checks as one table, each row coloured by its status (class red / amber / green / info)."""
    rows = "".join(
        f'<tr class="{c.status}" data-status="{c.status}"><td><b>{c.status.upper()}</b></td>'
        f"<td>{html.escape(c.check)}</td><td>{html.escape(c.value)}</td><td>{html.escape(c.explanation)}</td></tr>"
        for c in checks
    )
    return (
        '<table class="t q" id="quality"><tr><th>status</th><th>check</th><th>value</th>'
        f"<th>what it means</th></tr>{rows}</table>"
    )


@dataclass
class ReportContent:
    """Everything ``subtype`` computed that the report shows; the report computes nothing itself."""

    out: Path
    run: object  # the TrainedRun: its folder, checkpoint and step
    table: pd.DataFrame  # the cohort table (group, age, sex, site…)
    grid_shape: tuple[int, ...]
    subtypes: pd.DataFrame
    stability: pd.DataFrame
    maps: dict
    tables: dict
    atlases: list
    salient: np.ndarray
    probes: pd.DataFrame
    settings: object  # the SubtypeConfig
    checks: list = field(default_factory=list)
    k_forced: bool = False
    recipe: str = ""
    grid: object = None  # MapsAtAnalysisGrid: saliency and effect sizes on the derivatives' grid
    clusters: dict = field(default_factory=dict)
    agreement: pd.DataFrame | None = None
    subject_maps: dict = field(default_factory=dict)
    comparison: object = None  # subtype.Comparison: the other representation's subtypes
    runs: pd.DataFrame | None = None  # runs.tsv of a consensus across seeds


CLUSTER_COLUMNS = ["cluster", "sign", "volume_mm3", "peak_x_mm", "peak_y_mm", "peak_z_mm", "peak_hemisphere"]


def _cluster_html(table: pd.DataFrame, value: str, atlas: str, rows: int = 10) -> str:
    if table.empty:
        return "<p>No cluster above the threshold.</p>"
    columns = [*CLUSTER_COLUMNS[:3], value, *CLUSTER_COLUMNS[3:], f"{atlas}_peak_region", f"{atlas}_regions"]
    shown = table[columns].head(rows).copy()
    for column in ("volume_mm3", "peak_x_mm", "peak_y_mm", "peak_z_mm"):
        shown[column] = shown[column].round().astype(int)
    more = f"<p class='meta'>{len(table) - rows} more in the TSV.</p>" if len(table) > rows else ""
    return _table(shown) + more


def subtype_map_figures(content: ReportContent) -> dict[str, bytes]:
    """Per subtype: signed saliency where its test passes, and the effect-size map, each as its
    cluster table thresholds it and on one colour scale across subtypes."""
    grid, settings = content.grid, content.settings
    saliency = {label: grid.shown_saliency(label) for label in grid.signed}
    effect = {label: grid.shown_effect(label) for label in grid.signed}
    saliency_max = max(float(np.abs(v).max()) for v in saliency.values())
    effect_max = max(float(np.abs(v).max()) for v in effect.values())
    extent = f"clusters ≥ {settings.min_cluster_mm3:g} mm³"
    pngs = {}
    for label in grid.signed:
        pngs[f"subtype-{label}_saliency_glass"], pngs[f"subtype-{label}_saliency_slices"] = stat_map_figures(
            saliency[label],
            grid.affine,
            saliency_max * 1e-6,
            saliency_max,
            f"{label}: signed saliency (a.u.), z ≥ {settings.saliency_threshold:g}, {extent}",
        )
        pngs[f"subtype-{label}_effectsize_glass"], pngs[f"subtype-{label}_effectsize_slices"] = (
            stat_map_figures(
                effect[label],
                grid.affine,
                settings.effect_size_threshold,
                effect_max,
                f"{label}: Cohen's d on {grid.feature}, |d| ≥ {settings.effect_size_threshold:g}, "
                f"p < 0.001, {extent}",
            )
        )
    return pngs


def patient_page(row: pd.Series, names: list[str], subject_png: bytes | None, settings) -> str:
    """One page per patient: subtype, assignment frequency of every subtype, nearest other subtype,
    demographics and, with --per-subject-maps, the patient's own saliency."""
    pid = html.escape(str(row["participant_id"]))
    body = [
        f"<h1>{pid}</h1><p class='meta'>neurosepclr {__version__}; research use only, not a medical "
        "device. <a href='../report.html'>Back to the report</a>.</p>"
    ]
    frequency = row.get("assignment_frequency")
    certain = isinstance(frequency, float) and not np.isnan(frequency)
    text = f"<p>Subtype <b>{html.escape(str(row['subtype']))}</b>"
    if certain:
        text += (
            f" in <b>{frequency:.0%}</b> of {settings.bootstrap} bootstrap refits of the subtypes"
            f" ({'confident' if row['confident'] else 'uncertain'}: threshold {settings.confidence:.0%})."
        )
    text += f" Nearest other subtype: {html.escape(str(row['nearest_other_subtype']))}.</p>"
    body.append(text)
    if certain:
        bars = "".join(
            f"<tr><td>{n}</td><td><span class='bar' style='width:{200 * row[f'freq_{n}']:.0f}px'></span> "
            f"{row[f'freq_{n}']:.0%}</td></tr>"
            for n in names
            if f"freq_{n}" in row
        )
        body.append(
            "<table class='t' id='frequencies'><tr><th>subtype</th><th>share of refits</th></tr>"
            f"{bars}</table>"
        )
    details = {
        k: row[k]
        for k in row.index
        if k in ("session_id", "group", "split", "age", "sex", "site") or k in ("diagnosis", "group_label")
    }
    body.append(_table(pd.DataFrame([details])))
    if subject_png is not None:
        body += [
            "<h2>This patient's saliency</h2>",
            _img(subject_png, f"{pid} saliency"),
            "<p class='meta'>Top 10 % of |attribution| drawn; a property of the model, not a "
            "measurement of atrophy.</p>",
        ]
    else:
        body.append("<p class='meta'>This patient's own map: rerun subtype with --per-subject-maps.</p>")
    return _page(f"neurosepclr: {row['participant_id']}", body)


def write_patient_pages(content: ReportContent, names: list[str]) -> dict[str, str]:
    """``patients/<participant>[_ses-<session>].html`` for every patient; returns id → relative link."""
    folder = content.out / "patients"
    folder.mkdir(exist_ok=True)
    links = {}
    patients = content.subtypes[content.subtypes["group"] == "target"]
    merged = patients.merge(
        content.table[
            [c for c in ("participant_id", "session_id", "age", "sex", "site") if c in content.table]
        ],
        on=["participant_id", "session_id"],
        how="left",
    )
    for _, row in merged.iterrows():
        session = row["session_id"] if isinstance(row["session_id"], str) and row["session_id"] else ""
        stem = f"{row['participant_id']}" + (f"_ses-{session}" if session else "")
        path = content.subject_maps.get((row["participant_id"], row["session_id"]))
        png = subject_figure(path, stem) if path is not None else None
        atomic_write_text(folder / f"{stem}.html", patient_page(row, names, png, content.settings))
        links[stem] = f"patients/{stem}.html"
    return links


def offline_page(page: str) -> str:
    """A nilearn viewer page without its one network reference (a favicon on GitHub); its scripts
    and images are inlined already."""
    import re

    return re.sub(r"<link[^>]*rel=[\"']?icon[^>]*>", "", page)


def write_viewers(content: ReportContent) -> list[str]:
    """One nilearn ``view_img`` page per subtype map (scripts and images inlined: no network)."""
    from nilearn import datasets, plotting

    from neurosepclr.analysis.saliency import map_image

    grid, settings = content.grid, content.settings
    folder = content.out / "viewer"
    folder.mkdir(exist_ok=True)
    background = datasets.load_mni152_template(resolution=2)
    pages = []
    for label in grid.signed:
        for kind, values, threshold in (
            ("effectsize", grid.effect.d[grid.feature][label], settings.effect_size_threshold),
            ("saliencyz", grid.zmap[label], settings.saliency_threshold),
        ):
            view = plotting.view_img(
                map_image(values, grid.affine),
                bg_img=background,
                threshold=threshold,
                title=f"{label} {kind}",
                symmetric_cmap=True,
            )
            name = f"viewer/subtype-{label}_desc-{kind}_viewer.html"
            atomic_write_text(content.out / name, offline_page(view.get_standalone()))
            pages.append(name)
    return pages


def write_report(content: ReportContent) -> Path:
    """Render figures, patient pages and ``report.html`` into ``content.out``; returns the report path.
    nilearn's warnings about empty or thresholded-away maps are silenced: the report states its
    thresholds and says when no cluster passes them."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _write_report(content)


def _write_report(content: ReportContent) -> Path:
    import datetime

    import matplotlib

    matplotlib.use("Agg")

    c = content
    out, run, subtypes, stability, settings = Path(c.out), c.run, c.subtypes, c.stability, c.settings
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    pngs: dict[str, bytes] = {
        "k_selection": _figure_bytes(k_selection_figure(stability)),
        "subtype_sizes": _figure_bytes(sizes_figure(subtypes)),
        "salient_space": _figure_bytes(salient_space_figure(c.salient, subtypes)),
    }
    if (run.run_dir / "metrics.jsonl").is_file():
        pngs["training_curves"] = _figure_bytes(training_figure(run.run_dir / "metrics.jsonl"))
    pngs |= subtype_map_figures(c)
    for name, png in pngs.items():
        atomic_write_bytes(figures / f"{name}.png", png)
    names = sorted(c.maps, key=lambda n: int(n[1:]))
    links = write_patient_pages(c, names) if settings.patient_pages else {}
    viewers = write_viewers(c) if settings.viewer else []

    demographics = pd.read_csv(out / "demographics.tsv", sep="\t")
    n_target = int((c.table["group"] == "target").sum())
    feature = c.grid.feature
    atlas = c.atlases[0]
    k = int(stability.loc[stability["chosen"], "k"].iloc[0])
    today = datetime.date.today().isoformat()
    how_k = "forced (subtype.k)" if c.k_forced else "chosen by stability above noise"
    covariates = ", ".join(c.grid.effect.covariates) or "no covariate"
    sections = [
        f"<p class='meta'>neurosepclr {__version__}, {today}. Recipe: "
        f"<code>{html.escape(c.recipe or 'defaults and command-line flags')}</code>. Run "
        f"<code>{html.escape(str(run.run_dir))}</code>, checkpoint <code>{run.checkpoint.name}</code> "
        f"(step {run.step}). K = {k}, {how_k}."
        " Research use only; not a medical device.</p>",
        "<h2>Quality</h2>",
        quality_box(c.checks),
        "<p class='meta'>Red: do not interpret the subtypes before fixing it. Amber: read with care. "
        "Probe values are held-out scores with 95 % bootstrap intervals (probes.tsv); full list in "
        "quality.tsv.</p>",
        "<h2>Cohort</h2>",
        f"<p>{len(c.table)} subjects: {n_target} patients (target), {len(c.table) - n_target} controls "
        f"(background). Training grid {'×'.join(str(s) for s in c.grid_shape)} voxels. Subtypes fitted on "
        "the "
        f"{int(((subtypes['group'] == 'target') & subtypes['in_training']).sum())} training patients "
        f"({settings.method}); saliency: {html.escape(settings.saliency)}. The encoders saw "
        f"{html.escape(', '.join(run.config.data.features))} (data.features).</p>",
        "<h2>Number of subtypes</h2>",
        _img(pngs["k_selection"], "K selection"),
        k_selection_text(stability),
        _table(stability),
        "<h2>Subtypes and demographics</h2>",
        _img(pngs["subtype_sizes"], "subtype sizes"),
        _table(demographics),
        *representation_section(c),
        "<h2>Salient space</h2>",
        _img(pngs["salient_space"], "salient space"),
        "<h2>What each space knows (held-out linear probes)</h2>",
        _table(c.probes),
        "<h2>Maps</h2>",
        f"<p>Left: the model's <b>signed saliency</b> ({html.escape(settings.saliency)}, arbitrary units; "
        "positive "
        f"voxels push a patient away from the controls), drawn where the subtype's |saliency| exceeds the "
        f"controls' (one-sided Welch test, z ≥ {settings.saliency_threshold:g}, uncorrected). Right: the "
        f"<b>effect size</b> of the subtype's patients against the controls on the preprocessed "
        f"{html.escape(feature)} (Cohen's d adjusted for {html.escape(covariates)}; "
        f"blue = lower in patients), drawn at |d| ≥ {settings.effect_size_threshold:g} and p < 0.001 "
        "(uncorrected); model-independent, "
        "as a VBM "
        f"group comparison. Both on the {grid_label(c.grid.affine)} analysis grid over {BACKGROUND_NOTE}; "
        "one "
        "colour scale per kind across subtypes.</p>",
    ]
    for label in names:
        sections += [f"<h2 id='subtype-{label}'>Subtype {html.escape(label)}</h2>"]
        if c.agreement is not None and not c.agreement.empty:
            row = c.agreement[c.agreement["subtype"] == label].iloc[0]
            agree = "agree" if row["shared_top_regions"] >= 2 else "<span class='warn'>disagree</span>"
            sections.append(
                f"<p>The two maps {agree}: {int(row['shared_top_regions'])} of their top "
                f"{int(row['top_regions'])} "
                f"{html.escape(atlas.name)} regions are shared; voxel correlation of |saliency| and |d| "
                f"r = {row['correlation']:.2f}.</p>"
            )
        sections.append(
            "<div class='pair'><div><h3>Saliency</h3>"
            + _img(pngs[f"subtype-{label}_saliency_glass"], f"subtype {label} saliency glass brain")
            + _img(pngs[f"subtype-{label}_saliency_slices"], f"subtype {label} saliency slices")
            + "</div><div><h3>Effect size</h3>"
            + _img(pngs[f"subtype-{label}_effectsize_glass"], f"subtype {label} effect size glass brain")
            + _img(pngs[f"subtype-{label}_effectsize_slices"], f"subtype {label} effect size slices")
            + "</div></div>"
        )
        tables = c.clusters.get(label, {})
        sections += [
            f"<h3>Saliency clusters (z ≥ {settings.saliency_threshold:g}, "
            f"≥ {settings.min_cluster_mm3:g} mm³)</h3>",
            _cluster_html(tables.get("saliency", pd.DataFrame()), "peak_z", atlas.name),
            f"<h3>Effect-size clusters (|d| ≥ {settings.effect_size_threshold:g})</h3>",
            _cluster_html(tables.get("effectsize", pd.DataFrame()), "peak_d", atlas.name),
            f"<p class='meta'>Full tables: tables/subtype-{label}_desc-*_clusters.tsv (every atlas asked) "
            "and "
            f"tables/subtype-{label}_atlas-*_regions.tsv (every region by mean |saliency|). "
            f"Atlas licence: {html.escape(atlas.licence)}</p>",
        ]
        if viewers:
            sections.append(
                "<p>Interactive viewers: "
                + ", ".join(
                    f"<a href='{v}'>{html.escape(Path(v).stem)}</a>" for v in viewers if f"-{label}_" in v
                )
                + "</p>"
            )
    sections += patient_section(subtypes, links, settings)
    if "training_curves" in pngs:
        sections += ["<h2>Training</h2>", _img(pngs["training_curves"], "training curves")]
    sections += ["<h2>How to read this report</h2>", f"<p>{html.escape(CAVEATS)}</p>"]
    page = _page("neurosepclr subtype report", ["<h1>neurosepclr subtype report</h1>", *sections])
    path = out / "report.html"
    atomic_write_text(path, page)
    return path


def representation_section(content: ReportContent) -> list[str]:
    """The seeds of a consensus and their agreement; the other representation's subtypes against the
    reported ones (cross-table, ARI), and a warning when they disagree."""
    settings, sections = content.settings, []
    reported = SHORT_NAMES[settings.representation]
    if content.runs is not None:
        runs = content.runs
        if settings.consensus_method == "joint":
            how = (
                "each run's salient coordinates, whitened as that run's own subtyping does, are placed "
                "side by side and clustered once (the mean of the runs' similarities between patients); a "
                f"patient's assignment frequency is the share of {settings.bootstrap} bootstrap refits of "
                "that clustering that agree with it"
            )
        else:
            how = (
                f"each run's subtypes and {settings.bootstrap} bootstrap refits of them enter one "
                "co-association matrix, clustered once (average linkage); a patient's assignment "
                "frequency is the share of all those subtypings that agree with the consensus"
            )
        sections += [
            "<h2 id='seeds'>Agreement across seeds</h2>",
            f"<p>The subtypes are the consensus of {len(runs)} trained runs (seeds "
            f"{', '.join(str(s) for s in runs['seed'])}): {how}. Each run's own subtypes are compared "
            "with it below. Mean ARI between runs: "
            f"{runs['mean_ari_with_other_runs'].mean():.2f}.</p>",
            _table(runs[["seed", "checkpoint", "ari_with_consensus", "mean_ari_with_other_runs"]]),
        ]
    comparison = content.comparison
    if comparison is None:
        return sections
    other = SHORT_NAMES[comparison.name]
    patients = content.subtypes[content.subtypes["group"] == "target"]
    table = pd.crosstab(
        patients["subtype"].rename(f"{reported} (reported)"),
        patients[f"subtype_{comparison.name}"].rename(other),
    )
    verdict = (
        "They agree."
        if comparison.ari_all >= REPRESENTATIONS_AGREE
        else "<span class='warn'>They disagree</span>: the subtypes depend on the representation; "
        "read both before acting on either."
    )
    alpha = f" (alpha {comparison.alpha:g}, chosen without labels)" if comparison.alpha is not None else ""
    heldout = "" if np.isnan(comparison.ari_heldout) else f", held-out patients {comparison.ari_heldout:.2f}"
    sections += [
        "<h2 id='representations'>Two representations</h2>",
        f"<p>The same patients subtyped in {other}{alpha}, with the same K and clustering, beside the "
        f"reported {reported} subtypes (names matched by overlap; column subtype_{comparison.name} of "
        f"subtypes.tsv). Adjusted Rand index {comparison.ari_all:.2f} over all patients{heldout}. "
        f"{verdict}</p>",
        table.to_html(border=0, classes="t"),
    ]
    return sections


def grid_label(affine: np.ndarray) -> str:
    return f"{abs(affine[0, 0]):g} mm"


def patient_section(subtypes: pd.DataFrame, links: dict, settings, rows: int = 50) -> list[str]:
    """The patients whose subtype is least certain, with links to their pages."""
    patients = subtypes[subtypes["group"] == "target"]
    if "assignment_frequency" not in patients:
        return ["<h2>Patients</h2>", "<p>No bootstrap refits (subtype.bootstrap: 0): see subtypes.tsv.</p>"]
    uncertain = patients[patients["assignment_frequency"] < settings.confidence].sort_values(
        "assignment_frequency"
    )
    columns = [
        "participant_id",
        "subtype",
        "assignment_frequency",
        "nearest_other_subtype",
        "nearest_other_frequency",
        "split",
    ]
    shown = uncertain[columns].head(rows).copy()
    if links:
        shown["participant_id"] = [
            f"<a href='{links.get(p, '')}'>{html.escape(p)}</a>" if p in links else html.escape(p)
            for p in shown["participant_id"]
        ]
    text = (
        f"<p>{len(uncertain)} of {len(patients)} patients keep their subtype in fewer than "
        f"{settings.confidence:.0%} of {settings.bootstrap} bootstrap refits (the least certain first"
        f"{'; the first ' + str(rows) + ' shown' if len(uncertain) > rows else ''}). "
        f"{'Every patient has a page in patients/.' if links else ''}</p>"
    )
    table = shown.to_html(index=False, escape=False, float_format=lambda v: f"{v:.2f}", border=0, classes="t")
    return ["<h2 id='patients'>Patients</h2>", text, table if len(shown) else ""]
