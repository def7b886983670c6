"""Brain extraction before registration (issue 20): deepbet on simulated whole heads, scored against
the simulator's true brain mask; refusal of images with no brain; the shipped networks checked by hash."""

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from neurosepclr.cli import main
from neurosepclr.data import brain_extraction
from neurosepclr.errors import ExitCode, InputDataError, MissingDependencyError
from tests.conftest import tiny_config

SUBJECTS = ["sub-0001", "sub-0002", "sub-0003"]


def preprocess(bids, out, *extra):
    argv = ["--quiet", "preprocess", str(bids), str(out), "--resolution", "3", "--n-jobs", "2"]
    return main([*argv, "--participant-label", *SUBJECTS, *extra])


@pytest.fixture(scope="module")
def heads_and_brains(tmp_path_factory):
    """The same three subjects simulated as whole heads and as brain-only images, preprocessed with
    deepbet and without brain extraction."""
    from neurosepclr.data.simulate import simulate

    root = tmp_path_factory.mktemp("heads")
    design = ("simulate.n_controls=2", "simulate.n_patients_per_subtype=[1,0,0]")
    heads = simulate(tiny_config(*design), root / "heads", progress=False)
    brains = simulate(tiny_config(*design, "simulate.brain_only=true"), root / "brains", progress=False)
    assert preprocess(heads, root / "heads_deriv") == 0
    assert preprocess(brains, root / "brains_deriv", "--brain-extraction", "none") == 0
    return heads, root / "heads_deriv", root / "brains_deriv"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_deepbet_masks_match_the_true_brain_and_registration_matches_brain_only_images(heads_and_brains):
    heads, heads_deriv, brains_deriv = heads_and_brains
    for pid in SUBJECTS:
        mask = nib.load(heads_deriv / pid / "anat" / f"{pid}_desc-brain_mask.nii.gz")
        truth = nib.as_closest_canonical(
            nib.load(heads / "derivatives" / "truth" / pid / "anat" / f"{pid}_desc-brain_mask.nii.gz")
        )
        np.testing.assert_allclose(mask.affine, truth.affine, atol=1e-4)  # native space, RAS voxel order
        assert dice(np.asarray(mask.dataobj) > 0, np.asarray(truth.dataobj) > 0) >= 0.95
    qc_heads = pd.read_csv(heads_deriv / "qc.tsv", sep="\t").set_index("participant_id")
    qc_brains = pd.read_csv(brains_deriv / "qc.tsv", sep="\t").set_index("participant_id")
    assert qc_heads["qc_pass"].all()
    assert (qc_heads["brain_mask_ml"] > 1000).all() and qc_brains["brain_mask_ml"].isna().all()
    gap = (qc_heads["template_correlation"] - qc_brains.loc[qc_heads.index, "template_correlation"]).abs()
    assert gap.max() <= 0.02, gap


def test_without_extraction_whole_heads_register_visibly_worse(heads_and_brains, tmp_path):
    """Today's pipeline on the same heads: the skull pulls the registration off the brain."""
    heads, heads_deriv, _ = heads_and_brains
    assert preprocess(heads, tmp_path / "deriv", "--brain-extraction", "none") == 0
    unstripped = pd.read_csv(tmp_path / "deriv" / "qc.tsv", sep="\t")["template_correlation"]
    stripped = pd.read_csv(heads_deriv / "qc.tsv", sep="\t")["template_correlation"]
    assert unstripped.mean() < stripped.mean() - 0.05


def test_the_qc_mosaic_shows_the_native_mask_above_the_template_space_image(heads_and_brains):
    _, heads_deriv, brains_deriv = heads_and_brains
    name = "sub-0001_space-MNI152NLin2009aSym_res-3_desc-qc_T1w.png"
    from PIL import Image

    two_rows = Image.open(heads_deriv / "sub-0001" / "anat" / name).size
    one_row = Image.open(brains_deriv / "sub-0001" / "anat" / name).size
    assert two_rows[0] == one_row[0] and two_rows[1] > 1.8 * one_row[1]


def write_image(bids, pid, data):
    folder = bids / pid / "anat"
    folder.mkdir(parents=True)
    image = nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    nib.save(image, folder / f"{pid}_T1w.nii.gz")


@pytest.mark.parametrize("kind", ["noise", "phantom"])
def test_an_image_with_no_brain_is_refused_before_registration(tmp_path, kind, capsys):
    rng = np.random.default_rng(0)
    shape = (90, 110, 100)
    if kind == "noise":
        data = rng.rayleigh(100.0, shape)
    else:  # an evenly filled sphere of brain size, with noise
        z, y, x = np.indices(shape)
        data = 800.0 * ((z - 45) ** 2 + (y - 55) ** 2 + (x - 50) ** 2 < 35**2) + rng.normal(0, 20, shape)
    bids = tmp_path / "bids"
    write_image(bids, "sub-01", np.abs(data))
    pd.DataFrame({"participant_id": ["sub-01"], "diagnosis": ["CN"]}).to_csv(
        bids / "participants.tsv", sep="\t", index=False
    )
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    code = main(["preprocess", str(bids), str(tmp_path / "deriv"), "--resolution", "3"])
    err = capsys.readouterr().err
    assert code == ExitCode.DATA
    assert "sub-01" in err and "sub-01_T1w.nii.gz" in err and "noise or a phantom" in err
    assert not list((tmp_path / "deriv").glob("sub-01/anat/*.nii.gz"))


def test_skip_bad_excludes_an_image_with_no_brain_and_processes_the_others(heads_and_brains, tmp_path):
    heads, _, _ = heads_and_brains
    bids = tmp_path / "bids"
    write_image(bids, "sub-01", np.random.default_rng(0).rayleigh(100.0, (90, 110, 100)))
    (bids / "sub-02" / "anat").mkdir(parents=True)
    shutil.copy(
        heads / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz", bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    )
    pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "diagnosis": ["CN", "PT"]}).to_csv(
        bids / "participants.tsv", sep="\t", index=False
    )
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    out = tmp_path / "deriv"
    assert main(["--quiet", "preprocess", str(bids), str(out), "--resolution", "3", "--skip-bad"]) == 0
    excluded = pd.read_csv(out / "excluded.tsv", sep="\t")
    assert excluded["participant_id"].tolist() == ["sub-01"] and "noise or a phantom" in excluded["reason"][0]
    assert pd.read_csv(out / "qc.tsv", sep="\t")["participant_id"].tolist() == ["sub-02"]


def test_an_altered_network_file_is_refused(monkeypatch):
    brain_extraction.load_deepbet.cache_clear()
    monkeypatch.setitem(brain_extraction.DEEPBET_SHA256, "model.pt", "0" * 64)
    with pytest.raises(brain_extraction.ModelFileError, match="refusing to load"):
        brain_extraction.load_deepbet("cpu")
    brain_extraction.load_deepbet.cache_clear()


def test_a_missing_deepbet_names_the_extra(monkeypatch):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(MissingDependencyError, match=r"neurosepclr\[preprocess\]"):
        brain_extraction._deepbet_file("model.pt")


def test_structure_inside_separates_anatomy_from_noise():
    rng = np.random.default_rng(1)
    mask = np.zeros((30, 30, 30), dtype=bool)
    mask[5:25, 5:25, 5:25] = True
    noise = rng.normal(size=mask.shape)
    smooth = ndimage.gaussian_filter(noise, 2.0)
    assert brain_extraction.structure_inside(noise, mask) < 0.1
    assert brain_extraction.structure_inside(smooth, mask) > 0.8
    assert brain_extraction.structure_inside(np.ones(mask.shape), mask) == 0.0


def test_a_box_network_finding_almost_nothing_means_no_brain():
    """A few stray voxels give no box (no crash): the empty mask is then refused by its volume."""
    speck = np.zeros((128, 128, 128), dtype=np.float32)
    speck[60:62, 60:62, 60:62] = 1.0
    assert brain_extraction._box_around(speck, (90, 110, 100)) is None
    blob = np.zeros_like(speck)
    blob[30:90, 30:100, 20:110] = 1.0
    box = brain_extraction._box_around(blob, (128, 128, 128))
    assert box is not None and box[0].start < 30 and box[0].stop > 90


def test_mask_volume_is_refused_when_impossible_and_flagged_when_implausible():
    rng = np.random.default_rng(2)
    anatomy = ndimage.gaussian_filter(rng.normal(size=(40, 40, 40)), 2.0)  # structured, like a brain
    mask = np.zeros(anatomy.shape, dtype=bool)
    mask[5:35, 5:35, 5:35] = True  # 27,000 voxels

    def brain(voxel_mm3):
        return brain_extraction.BrainMask(mask, mask.sum() * voxel_mm3 / 1000.0, "deepbet")

    assert brain_extraction.check_brain(brain(60.0), anatomy, "sub-01", "f.nii.gz") == []  # 1620 mL
    flagged = brain_extraction.check_brain(brain(110.0), anatomy, "sub-01", "f.nii.gz")  # 2970 mL
    assert len(flagged) == 1 and "2970 mL" in flagged[0] and "800-2800" in flagged[0]
    with pytest.raises(InputDataError, match=r"sub-01: f.nii.gz: .* 135 mL of brain, outside the possible"):
        brain_extraction.check_brain(brain(5.0), anatomy, "sub-01", "f.nii.gz")
