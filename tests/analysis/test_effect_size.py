"""Effect-size maps on a tiny simulated cohort peak in each subtype's true territory."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurosepclr.analysis.clusters import resample_map
from neurosepclr.analysis.effect_size import effect_size_maps
from neurosepclr.cli import main
from neurosepclr.data.simulate import simulate
from neurosepclr.data.truth import load_truth
from tests.conftest import CLEAN_MNI, tiny_config


@pytest.fixture(scope="module")
def darkened_cohort(tmp_path_factory):
    """6 controls and 3 subtypes × 3 patients on the template grid, brains only, whose territories
    lose grey-matter signal (intensity atrophy: the T1w shows it without a warp)."""
    noisy = [option for option in CLEAN_MNI if not option.startswith("simulate.noise")]  # scanner noise kept
    cfg = tiny_config(
        *noisy,
        "simulate.atrophy=intensity",
        "simulate.n_controls=6",
        "simulate.n_patients_per_subtype=[3]",
        "simulate.severity=[0.5, 0.6]",
        "simulate.brain_only=true",
    )
    return simulate(cfg, tmp_path_factory.mktemp("darkened") / "bids", progress=False)


@pytest.fixture(scope="module")
def clean_derivatives(darkened_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "deriv"
    argv = ["--quiet", "preprocess", str(darkened_cohort), str(out), "--resolution", "3",
            "--registration", "none", "--brain-extraction", "none", "--n-jobs", "2"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_each_subtype_map_peaks_in_its_true_territory(clean_derivatives, darkened_cohort):
    truth = load_truth(darkened_cohort)
    table = pd.read_csv(clean_derivatives / "cohort.tsv", sep="\t", dtype={"participant_id": str})
    subtype = table[["participant_id"]].merge(truth.table, on="participant_id", how="left")["subtype"]
    labels = np.where(table["group"] == "target", subtype.astype(str), "control")
    maps = effect_size_maps(clean_derivatives, table, np.arange(len(table)), labels, ("t1",))
    assert maps.counts == {"control": 6, **{name: 3 for name in truth.masks}}
    for name, mask_image in truth.masks.items():
        d = maps.d["t1"][name]
        assert np.isfinite(d).all()
        mask = resample_map(np.asarray(mask_image.dataobj) > 0, mask_image.affine, maps.affine, maps.shape, 0)
        peak = np.unravel_index(int(np.argmin(d)), d.shape)  # lowest: tissue lost in patients
        assert mask[peak] > 0, f"{name}: peak d {d[peak]:.2f} outside its territory"
        assert d[mask > 0].mean() < d[mask == 0].mean()
    image = nib.load(next(clean_derivatives.glob("tpl-*_desc-brain_mask.nii.gz")))
    np.testing.assert_allclose(image.affine, maps.affine)
