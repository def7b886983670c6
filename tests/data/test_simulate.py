"""neurosepclr simulate: valid BIDS, real affines, salient signal where intended, determinism."""

import hashlib
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from neurosepclr.cli import main
from neurosepclr.data.simulate import native_grid, simulate
from neurosepclr.data.template import load_template, res_label
from neurosepclr.errors import ConfigError
from tests.conftest import CLEAN_MNI, tiny_config


def read_tsv(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_bids_layout_and_tables(tiny_native_cohort):
    root = tiny_native_cohort
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "raw" and description["GeneratedBy"][0]["Name"] == "neurosepclr"
    participants = read_tsv(root / "participants.tsv")
    assert list(participants.columns) == ["participant_id", "diagnosis", "age", "sex", "site"]
    assert participants["participant_id"].tolist() == [f"sub-{i:04d}" for i in range(1, 11)]
    assert participants["diagnosis"].value_counts().to_dict() == {"PT": 6, "CN": 4}
    for pid in participants["participant_id"]:
        assert (root / pid / "anat" / f"{pid}_T1w.nii.gz").is_file()
    truth_dir = root / "derivatives" / "truth"
    assert json.loads((truth_dir / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    truth = read_tsv(truth_dir / "truth.tsv")
    assert "subtype" not in participants.columns and "severity" not in participants.columns
    patients = truth[truth["group"] == "PT"]
    assert patients["subtype"].value_counts().to_dict() == {
        "medial_temporal": 2,
        "frontal": 2,
        "parietal_posterior": 2,
    }
    assert (truth.loc[truth["group"] == "CN", "subtype"] == "n/a").all()
    severities = patients["severity"].astype(float)
    assert severities.between(0.2, 0.4).all()


def test_images_carry_their_scanner_geometry(tiny_native_cohort):
    truth = read_tsv(tiny_native_cohort / "derivatives" / "truth" / "truth.tsv")
    orientations = set()
    for row in truth.itertuples():
        img = nib.load(tiny_native_cohort / row.participant_id / "anat" / f"{row.participant_id}_T1w.nii.gz")
        assert "".join(nib.aff2axcodes(img.affine)) == row.orientation
        expected = [float(v) for v in row.voxel_size.split("x")]
        assert np.allclose(img.header.get_zooms(), expected, atol=1e-4)
        assert img.header["sform_code"] == 1 and img.header["qform_code"] == 1
        assert np.allclose(img.get_qform(), img.get_sform(), atol=1e-4)
        assert img.header["descrip"].tobytes().strip(b"\0") == b""
        assert img.get_data_dtype() == np.int16 and len(img.shape) == 3
        orientations.add(row.orientation)
    assert len(orientations) > 1  # the cohort mixes orientations


def test_native_grid_axes_follow_the_orientation_codes():
    corners = np.array([[-70.0, -100, -50], [70, 70, 80]])
    for codes in ("RAS", "LPS", "PIR", "ASL"):
        affine, shape = native_grid(corners, (2.0, 2.5, 3.0), codes)
        assert "".join(nib.aff2axcodes(affine)) == codes
        assert np.allclose(np.sqrt((affine[:3, :3] ** 2).sum(0)), [2.0, 2.5, 3.0])
        ends = np.array([affine @ [0, 0, 0, 1], affine @ [*(np.array(shape) - 1), 1]])[:, :3]
        assert (ends.min(0) <= corners.min(0)).all() and (ends.max(0) >= corners.max(0)).all()


def test_truth_masks_are_in_template_space(tiny_native_cohort):
    template = load_template(3.0)
    subtypes = read_tsv(tiny_native_cohort / "derivatives" / "truth" / "subtypes.tsv")
    assert subtypes["subtype"].tolist() == ["medial_temporal", "frontal", "parietal_posterior"]
    for row in subtypes.itertuples():
        assert row.mask == f"space-MNI152NLin2009aSym_res-{res_label(3.0)}_desc-{row.subtype}_mask.nii.gz"
        img = nib.load(tiny_native_cohort / "derivatives" / "truth" / row.mask)
        assert img.shape == template.shape and np.allclose(img.affine, template.affine)
        assert img.header["sform_code"] == 4
        data = np.asarray(img.dataobj)
        assert int(data.sum()) == int(row.n_voxels) > 50
        assert (template.gm[data > 0].mean()) > 0.3  # the territories are grey matter


def test_salient_signal_is_inside_the_subtype_masks_and_absent_in_controls(tmp_path):
    """The partial-volume (intensity) atrophy darkens each patient's own territory; the volume model
    is checked on the anatomy itself below (a change of shape moves white matter in, so a mean
    intensity is not its measure)."""
    cfg = tiny_config(*CLEAN_MNI, "simulate.atrophy=intensity")
    root = simulate(cfg, tmp_path / "bids", progress=False)
    truth = read_tsv(root / "derivatives" / "truth" / "truth.tsv")
    subtypes = read_tsv(root / "derivatives" / "truth" / "subtypes.tsv")
    masks = {
        r.subtype: np.asarray(nib.load(root / "derivatives/truth" / r.mask).dataobj) > 0
        for r in subtypes.itertuples()
    }
    template = load_template(3.0)
    reference = template.brain & (template.wm > 0.9)  # white matter: untouched by atrophy

    def ratio(pid, mask):
        data = np.asarray(nib.load(root / pid / "anat" / f"{pid}_T1w.nii.gz").dataobj, dtype=float)
        return data[mask].mean() / data[reference].mean()

    controls = truth[truth["group"] == "CN"]["participant_id"]
    control_ratio = {name: np.mean([ratio(pid, m) for pid in controls]) for name, m in masks.items()}
    for row in truth[truth["group"] == "PT"].itertuples():
        drops = {name: 1 - ratio(row.participant_id, m) / control_ratio[name] for name, m in masks.items()}
        own = drops.pop(row.subtype)
        # the patient's own territory lost grey matter; elsewhere only age/site differ from controls
        assert own > 0.05 and own > max(drops.values()) + 0.04, (row.participant_id, row.subtype, own, drops)


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_also_in_parallel(tmp_path, tiny_native_cohort):
    again = simulate(tiny_config(), tmp_path / "again", n_jobs=2, progress=False)
    assert _digest(again) == _digest(tiny_native_cohort)
    other = simulate(tiny_config(seed=8), tmp_path / "other", progress=False)
    assert _digest(other)["participants.tsv"] != _digest(tiny_native_cohort)["participants.tsv"]


def test_bad_configurations_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="Hippocampus_X"):
        simulate(tiny_config("simulate.subtypes=[{name: a, regions: [Hippocampus_X]}]"), tmp_path / "x")
    with pytest.raises(ConfigError, match="3 counts for 2 subtypes"):
        tiny_config(
            "simulate.subtypes=[{name: a, regions: [Hippocampus_L]}, {name: b, regions: [Amygdala_L]}]",
            "simulate.n_patients_per_subtype=[1, 2, 3]",
        )
    assert not (tmp_path / "x").exists()


def test_existing_output_is_kept_unless_forced(tmp_path, capsys):
    out = tmp_path / "bids"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    args = [
        "--quiet",
        "simulate",
        str(out),
        "--n-controls",
        "1",
        "--n-patients-per-subtype",
        "1",
        "--resolution",
        "4",
        "--geometry",
        "mni",
    ]
    assert main(args) == 73
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main([*args, "--force"]) == 0
    assert not (out / "keep.txt").exists()
    assert len(read_tsv(out / "participants.tsv")) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["bids"]  # no partial or old folder left


def test_imbalanced_subtypes_and_variability(tmp_path):
    cfg = tiny_config(
        "simulate.subtypes=[{name: mt, regions: [Hippocampus_L, Hippocampus_R, Amygdala_L, Amygdala_R]},"
        " {name: lt, regions: [Temporal_Sup_L, Temporal_Mid_L]}]",
        "simulate.n_patients_per_subtype=[5, 1]",
        "simulate.spatial_variability=1.0",
        "simulate.n_controls=0",
        "simulate.geometry=mni",
        "simulate.resolution=4",
    )
    out = simulate(cfg, tmp_path / "bids", progress=False)
    truth = read_tsv(out / "derivatives" / "truth" / "truth.tsv")
    assert truth["subtype"].value_counts().to_dict() == {"mt": 5, "lt": 1}
    hit = truth.loc[truth["subtype"] == "mt", "regions_hit"].str.split(",")
    assert all(1 <= len(regions) <= 4 for regions in hit)
    assert any(len(regions) < 4 for regions in hit)  # variability drops regions


def _one_patient(atrophy: str, severity: float = 0.4):
    """A patient and the same subject without the disease, in template space (3 mm)."""
    from dataclasses import replace

    from neurosepclr.atlases import load_atlas
    from neurosepclr.config import load_config
    from neurosepclr.data import simulate as sim

    cfg = load_config(None, ["simulate.resolution=3", f"simulate.atrophy={atrophy}"]).simulate
    template = load_template(cfg.resolution)
    atlas = load_atlas("aal").resampled_to(template.affine, template.shape)
    sites = sim.draw_sites(1, 1.0, 1.0, np.random.default_rng(0))
    patient = next(s for s in sim.draw_subjects(cfg, 0, sites) if s.subtype == "medial_temporal")
    patient = replace(patient, severity=severity)
    control = replace(patient, group="CN", subtype="n/a", severity=0.0, regions_hit=())
    territories = {spec.name: atlas.region_mask(spec.regions) for spec in cfg.subtypes}
    intensities = sim.tissue_intensities(template)

    def anatomy(spec):
        return sim.subject_anatomy(template, spec, atlas, cfg, np.random.default_rng(1), intensities)

    return template, territories, anatomy(patient), anatomy(control)


def test_volume_atrophy_shrinks_the_territory_by_the_recorded_amount_and_leaves_controls_alone():
    from neurosepclr.data.simulate import territory_volume_change

    _template, territories, patient, control = _one_patient("volume")
    own = territories["medial_temporal"]
    recorded = territory_volume_change(patient, territories)
    # the grey-matter volume (voxels at least half grey matter) of the territory shrinks by about the
    # recorded relative change of its grey-matter content; the other territories keep theirs
    count = int((patient.gm[own] >= 0.5).sum()) / int((control.gm[own] >= 0.5).sum()) - 1.0
    assert recorded["medial_temporal"] < -0.15 and count < -0.15
    assert abs(count - recorded["medial_temporal"]) < 0.1
    assert abs(recorded["frontal"]) < 0.01 and abs(recorded["parietal_posterior"]) < 0.01
    # a change of shape, not only of contrast: grey matter moved (the control's anatomy is the
    # template's), and the fraction of the territory at least half grey matter drops with it
    assert not np.allclose(patient.gm, control.gm * (1 - 0.5 * patient.atrophy), atol=1e-3)
    assert territory_volume_change(control, territories) == {name: 0.0 for name in territories}
    np.testing.assert_array_equal(control.gm, _one_patient("intensity")[3].gm)  # controls: same in both


def test_intensity_atrophy_keeps_the_shape_and_loses_the_recorded_fraction():
    from neurosepclr.data.simulate import territory_volume_change

    _template, territories, patient, control = _one_patient("intensity", severity=0.3)
    # partial-volume loss only: grey matter lost in place, exactly (1 − atrophy) of it kept
    np.testing.assert_allclose(patient.gm, control.gm * (1.0 - patient.atrophy), atol=1e-6)
    assert territory_volume_change(patient, territories)["medial_temporal"] == pytest.approx(-0.3, abs=0.05)


def test_contraction_is_one_to_one_at_the_largest_allowed_severity():
    from neurosepclr.data.simulate import contraction_field, pullback_jacobian, territory_weight

    template = load_template(3.0)
    from neurosepclr.atlases import load_atlas

    atlas = load_atlas("aal").resampled_to(template.affine, template.shape)
    weight = 0.9 * territory_weight(atlas.region_mask(["Hippocampus_L", "Frontal_Sup_2_L"]), 3.0)
    jacobian = pullback_jacobian(contraction_field(weight, template.gm, 3.0))
    assert jacobian.min() > 0.05  # no folding
    assert jacobian.max() > 1.3  # grey matter squeezed: the tissue's volume is 1 / jacobian


def test_truth_records_the_volume_change_of_every_territory(tiny_native_cohort):
    truth = pd.read_csv(tiny_native_cohort / "derivatives" / "truth" / "truth.tsv", sep="\t")
    columns = [f"gm_volume_change_{name}" for name in ("medial_temporal", "frontal", "parietal_posterior")]
    assert set(columns) <= set(truth.columns)
    controls, patients = truth[truth["group"] == "CN"], truth[truth["group"] == "PT"]
    assert (controls[columns] == 0).all().all()
    for row in patients.itertuples():
        own = getattr(row, f"gm_volume_change_{row.subtype}")
        assert own < -0.05  # the patient's own territory lost grey matter


def test_whole_heads_surround_the_true_brain_mask_and_brain_only_images_have_no_head(tmp_path):
    """Whole heads (the default) put dark CSF and bone, bright fat and a neck around the brain, on
    a larger field of view, and the truth keeps the brain mask on each image's own grid;
    --brain-only cohorts get no such files."""
    design = ("simulate.n_controls=1", "simulate.n_patients_per_subtype=[1,0,0]")
    heads = simulate(tiny_config(*design), tmp_path / "heads", progress=False)
    brains = tiny_config(*design, "simulate.brain_only=true")
    brain_only = simulate(brains, tmp_path / "brains", progress=False)
    for pid in ("sub-0001", "sub-0002"):
        head = nib.load(heads / pid / "anat" / f"{pid}_T1w.nii.gz")
        mask = nib.load(heads / "derivatives" / "truth" / pid / "anat" / f"{pid}_desc-brain_mask.nii.gz")
        np.testing.assert_allclose(mask.affine, head.affine)
        assert mask.shape == head.shape and int(mask.header["sform_code"]) == 1
        data, brain = np.asarray(head.dataobj, dtype=np.float64), np.asarray(mask.dataobj) > 0
        litres = brain.sum() * np.prod(head.header.get_zooms()) / 1e6
        assert 1.2 < litres < 2.6
        white = np.percentile(data[brain], 90)
        outside = data[~brain]
        assert (outside > white).mean() > 0.01  # fat of the scalp and orbits brighter than white matter
        head_voxels = ndimage.binary_dilation(brain, iterations=5) & ~brain
        assert np.median(data[head_voxels]) < 0.6 * white  # CSF and bone right around the brain: dark
        # a larger field of view than the brain-only image: the head and some neck
        only = nib.load(brain_only / pid / "anat" / f"{pid}_T1w.nii.gz")
        assert np.prod(head.shape) * np.prod(head.header.get_zooms()) > 1.3 * np.prod(only.shape) * np.prod(
            only.header.get_zooms()
        )
    assert not (brain_only / "derivatives" / "truth" / "sub-0001").exists()
