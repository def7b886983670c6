"""Write docs/figures/simulation-volume-loss.png: one simulated subject without and with the default
volume-loss atrophy (medial temporal subtype, severity 0.4), their difference, and the tissue volume
change of the contraction (1 / Jacobian of the pull-back map), on a coronal slice of the template.

python docs/make_simulation_figure.py
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np

from neurosepclr.atlases import load_atlas
from neurosepclr.config import load_config
from neurosepclr.data import simulate as sim
from neurosepclr.data.template import load_template

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    cfg = load_config(None, ["simulate.resolution=1.5"]).simulate
    template = load_template(cfg.resolution)
    atlas = load_atlas("aal").resampled_to(template.affine, template.shape)
    sites = sim.draw_sites(1, 1.0, 1.0, np.random.default_rng(0))
    patient = next(s for s in sim.draw_subjects(cfg, 0, sites) if s.subtype == "medial_temporal")
    patient = replace(patient, severity=0.4, age=70.0)
    control = replace(patient, group="CN", subtype="n/a", severity=0.0, regions_hit=())
    intensities = sim.tissue_intensities(template)

    def anatomy(spec):
        return sim.subject_anatomy(template, spec, atlas, cfg, np.random.default_rng(1), intensities)

    before, after = anatomy(control), anatomy(patient)
    volume = 1.0 / sim.pullback_jacobian(sim.contraction_field(after.atrophy, template.gm, cfg.resolution))
    territories = {spec.name: atlas.region_mask(spec.regions) for spec in cfg.subtypes}
    change = sim.territory_volume_change(after, territories)["medial_temporal"]
    y = int(np.argmax(territories["medial_temporal"].sum(axis=(0, 2))))  # coronal slice through it

    def cut(data):
        return np.rot90(data[:, y, :])

    panels = [
        (cut(before.t1), "gray", (0, 1), "without the disease"),
        (cut(after.t1), "gray", (0, 1), f"volume-loss atrophy (GM {change:+.0%} in the territory)"),
        (cut(after.t1 - before.t1), "RdBu_r", (-0.3, 0.3), "difference (T1, normalised units)"),
        (cut(volume), "PuOr_r", (0.6, 1.4), "tissue volume change (1 / Jacobian)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 4.2))
    for ax, (data, cmap, (low, high), title) in zip(axes, panels, strict=True):
        shown = ax.imshow(data, cmap=cmap, vmin=low, vmax=high)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        if cmap != "gray":
            fig.colorbar(shown, ax=ax, fraction=0.04)
    fig.suptitle(
        f"simulated subject, coronal slice y = {y} (template grid, {cfg.resolution:g} mm)", fontsize=10
    )
    fig.tight_layout()
    out = Path(__file__).parent / "figures" / "simulation-volume-loss.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=90)
    print(out)


if __name__ == "__main__":
    main()
