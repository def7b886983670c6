"""``report.html``: one self-contained page (figures inlined as PNG, no script, no network) and the
same figures as PNG files under ``figures/``."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neurosepclr import __version__
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
        stability["k"], stability["stability_ari_mean"], yerr=stability["stability_ari_sd"],
        marker="o", label="split-half stability (ARI)", capsize=3,
    )  # fmt: skip
    ax.plot(stability["k"], stability["silhouette"], marker="s", label="silhouette")
    if "null_stability" in stability:
        ax.plot(
            stability["k"], stability["null_stability"], linestyle=":", color="C0",
            label="stability of structureless data",
        )  # fmt: skip
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


def brain_figures(saliency_path: Path, title: str) -> tuple[bytes, bytes]:
    """Glass brain and orthogonal slices of a saliency map over nilearn's MNI152 2009 template."""
    import matplotlib

    matplotlib.use("Agg")
    import nibabel as nib
    from nilearn import datasets, plotting

    image = nib.load(saliency_path)
    values = np.asarray(image.dataobj)
    positive = values[values > 0]
    threshold = float(np.percentile(positive, 90)) if positive.size else 0.0
    background = datasets.load_mni152_template(resolution=2)
    glass = plotting.plot_glass_brain(
        image, threshold=threshold, colorbar=True, title=title, plot_abs=False, cmap="hot"
    )
    glass_png = _figure_bytes(glass.frame_axes.figure)
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    cut = tuple(float(v) for v in (image.affine @ np.array([*peak, 1.0]))[:3])
    slices = plotting.plot_stat_map(
        image, bg_img=background, threshold=threshold, cut_coords=cut, title=title, cmap="hot"
    )
    slices_png = _figure_bytes(slices.frame_axes.figure)
    return glass_png, slices_png


def _img(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="n/a", border=0, classes="t")


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


def write_report(content: ReportContent) -> Path:
    """Render figures and ``report.html`` into ``content.out``; returns the report path."""
    import matplotlib

    matplotlib.use("Agg")

    c = content
    out, run, subtypes, stability, maps = Path(c.out), c.run, c.subtypes, c.stability, c.maps
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    pngs: dict[str, bytes] = {
        "k_selection": _figure_bytes(k_selection_figure(stability)),
        "subtype_sizes": _figure_bytes(sizes_figure(subtypes)),
        "salient_space": _figure_bytes(salient_space_figure(c.salient, subtypes)),
    }
    if (run.run_dir / "metrics.jsonl").is_file():
        pngs["training_curves"] = _figure_bytes(training_figure(run.run_dir / "metrics.jsonl"))
    for label in maps:
        path = out / "maps" / f"subtype-{label}_desc-saliency_map.nii.gz"
        pngs[f"subtype-{label}_glass"], pngs[f"subtype-{label}_slices"] = brain_figures(
            path, f"subtype {label}: mean |saliency|"
        )
    for name, png in pngs.items():
        atomic_write_bytes(figures / f"{name}.png", png)

    demographics = pd.read_csv(out / "demographics.tsv", sep="\t")
    n_target = int((c.table["group"] == "target").sum())
    sections = [
        "<h2>Cohort</h2>",
        f"<p>{len(c.table)} subjects: {n_target} patients (target), {len(c.table) - n_target} controls "
        f"(background). Run <code>{html.escape(str(run.run_dir))}</code>, checkpoint "
        f"<code>{run.checkpoint.name}</code> (step {run.step}), training grid "
        f"{'×'.join(str(s) for s in c.grid_shape)} voxels. Subtypes fitted on the "
        f"{int(((subtypes['group'] == 'target') & subtypes['in_training']).sum())} training patients "
        f"({c.settings.method}); saliency: {html.escape(c.settings.saliency)}. The encoders saw "
        f"{html.escape(', '.join(run.config.data.features))} (data.features).</p>",
        "<h2>Number of subtypes</h2>",
        _img(pngs["k_selection"], "K selection"),
        k_selection_text(stability),
        _table(stability),
        "<h2>Subtypes and demographics</h2>",
        _img(pngs["subtype_sizes"], "subtype sizes"),
        _table(demographics),
        "<h2>Salient space</h2>",
        _img(pngs["salient_space"], "salient space"),
        "<h2>What each space knows (held-out linear probes)</h2>",
        _table(c.probes),
    ]
    for label in maps:
        sections += [
            f"<h2>Subtype {html.escape(label)}</h2>",
            _img(pngs[f"subtype-{label}_glass"], f"subtype {label} glass brain"),
            _img(pngs[f"subtype-{label}_slices"], f"subtype {label} slices"),
        ]
        for atlas in c.atlases:
            table = c.tables[label][atlas.name].head(10)
            sections += [
                f"<h3>Top regions, atlas {html.escape(atlas.name)}</h3>",
                _table(table),
                f"<p class='licence'>Atlas licence: {html.escape(atlas.licence)}</p>",
            ]
    if "training_curves" in pngs:
        sections += ["<h2>Training</h2>", _img(pngs["training_curves"], "training curves")]
    sections += ["<h2>How to read this report</h2>", f"<p>{html.escape(CAVEATS)}</p>"]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>neurosepclr subtype report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;display:block;margin:0.5em 0}"
        "table.t{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
        "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        ".licence{font-size:0.8em;color:#555}.warn{color:#a40000}</style></head><body>"
        f"<h1>neurosepclr subtype report</h1><p>neurosepclr {__version__}</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
