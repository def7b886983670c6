"""How much of the simulated volume loss does morphometry measure? Paired, subject by subject.

Each of the first N patients of a simulated cohort (``neurosepclr simulate`` defaults, ``--seed``)
is rendered twice from the same draw (same anatomy, age, scanner grid, bias field and noise): with
its disease and with severity 0. Both images go through preprocessing with SyN and the morphometry
features; the script prints, in the patient's own territory, the grey-matter volume change the
truth records and the change measured by the modulated grey matter (Σ GM × J), the unmodulated
grey matter (Σ GM) and the mean log-Jacobian. A measured/recorded ratio near 1 means the
preprocessing sees the whole loss; the unmodulated change shows what registration hides.

    python benchmarks/volume_measurement.py [--patients 6] [--seed 0] [--set simulate.atrophy=intensity]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
from nilearn.image import resample_to_img

from neurosepclr.atlases import load_atlas
from neurosepclr.config import load_config
from neurosepclr.data import preprocess as prep
from neurosepclr.data import simulate as sim
from neurosepclr.data.template import load_template, make_nifti


def measure(image: np.ndarray, affine: np.ndarray, cfg, grid, seed: int) -> dict[str, np.ndarray]:
    """The morphometry maps of one simulated image (SyN, as ``preprocess --features`` does)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warped, transforms = prep.register_to_template(
            make_nifti(image.astype(np.float32), affine), cfg, grid, seed, work
        )
        maps, _volumes = prep.morphometry(warped, transforms, grid, work)
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="config override, KEY=VALUE")
    args = parser.parse_args()
    config = load_config(None, [f"seed={args.seed}", "preprocess.registration=syn", *args.set])
    sc, pc = config.simulate, config.preprocess
    template = load_template(sc.resolution)
    atlas = load_atlas("aal").resampled_to(template.affine, template.shape)
    sites = sim.draw_sites(
        sc.n_sites, sc.noise, sc.bias_field, np.random.default_rng(np.random.SeedSequence([args.seed, 0]))
    )
    site_by_name = {s.name: s for s in sites}
    territories = {spec.name: atlas.region_mask(spec.regions) for spec in sc.subtypes}
    intensities, centre = sim.tissue_intensities(template), sim.ventricle_centre(template)
    grid = prep.analysis_grid(pc.resolution, pc.crop_margin_mm)
    on_grid = {
        name: resample_to_img(
            template.image(mask.astype(np.float32)), grid.image(grid.t1), interpolation="nearest"
        ).get_fdata()
        > 0.5
        for name, mask in territories.items()
    }
    patients = [s for s in sim.draw_subjects(sc, args.seed, sites) if s.group == sim.TARGET_LABEL]
    ratios = []
    print(
        f"atrophy: {sc.atrophy}; SyN at {pc.resolution:g} mm; "
        "own territory, patient vs the same draw without disease"
    )
    for spec in patients[: args.patients]:
        healthy = dataclasses.replace(
            spec, group=sim.BACKGROUND_LABEL, severity=0.0, regions_hit=(), subtype="n/a"
        )
        maps = {}
        for name, subject in (("patient", spec), ("healthy", healthy)):
            image, affine, changes, _ = sim.render_subject(
                subject, sc, template, atlas, site_by_name[subject.site], intensities, centre, territories
            )
            maps[name] = measure(image, affine, pc, grid, args.seed)
            if name == "patient":
                recorded = changes[spec.subtype]
        mask = on_grid[spec.subtype]
        modulated = (
            maps["patient"]["gm_modulated"][mask].sum() / maps["healthy"]["gm_modulated"][mask].sum() - 1
        )
        plain = maps["patient"]["gm"][mask].sum() / maps["healthy"]["gm"][mask].sum() - 1
        logjac = maps["patient"]["logjacobian"][mask].mean() - maps["healthy"]["logjacobian"][mask].mean()
        ratios.append(modulated / recorded)
        print(
            f"{spec.participant_id} {spec.subtype:20s} severity {spec.severity:.3f}  "
            f"recorded {recorded:+.3f}  "
            f"modulated GM {modulated:+.3f}  GM {plain:+.3f}  mean log J {logjac:+.3f}  "
            f"measured/recorded {ratios[-1]:.2f}",
            flush=True,
        )
    print(
        f"measured/recorded (modulated GM): mean {statistics.mean(ratios):.2f}, "
        f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
