"""neurosepclr preprocess on a tiny misaligned, re-oriented cohort: template space, QC, cache, errors."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from neurosepclr.cli import main
from neurosepclr.config import DEFAULT_SUBTYPES
from neurosepclr.data.preprocess import analysis_grid

SUBJECTS = ["sub-0001", "sub-0002", "sub-0003", "sub-0004"]
RES = "3"


def run(bids, out, *extra):
    return main(
        [
            "--quiet",
            "preprocess",
            str(bids),
            str(out),
            "--resolution",
            RES,
            "--participant-label",
            *SUBJECTS,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_native_cohort):
    root = tmp_path_factory.mktemp("prep")
    bids = root / "bids"
    shutil.copytree(tiny_native_cohort, bids)
    out = root / "derivatives"
    assert run(bids, out, "--n-jobs", "2") == 0
    return bids, out


def preproc_path(out, pid):
    return out / pid / "anat" / f"{pid}_space-MNI152NLin2009aSym_res-{RES}_desc-preproc_T1w.nii.gz"


def test_outputs_are_in_template_space(prepared):
    bids, out = prepared
    grid = analysis_grid(3.0, 4.0)
    description = json.loads((out / "dataset_description.json").read_text())
    assert (
        description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "neurosepclr"
    )
    qc = pd.read_csv(out / "qc.tsv", sep="\t")
    assert qc["participant_id"].tolist() == SUBJECTS
    raw_orientations = set()
    for pid in SUBJECTS:
        raw = nib.load(bids / pid / "anat" / f"{pid}_T1w.nii.gz")
        raw_orientations.add(nib.aff2axcodes(raw.affine))
        img = nib.load(preproc_path(out, pid))
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(img.affine, grid.affine) and img.shape == grid.shape
        assert img.header["sform_code"] == 4 and img.header["qform_code"] == 4
        data = np.asarray(img.dataobj)
        correlation = np.corrcoef(data[grid.brain], grid.t1[grid.brain])[0, 1]
        assert correlation > 0.6, (pid, correlation)
        assert np.median(data[grid.brain]) == pytest.approx(0.0, abs=1e-3)
        assert (data[~grid.brain] == 0).all()
        assert (out / pid / "anat" / f"{pid}_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat").is_file()
        assert (out / pid / "anat" / f"{pid}_space-MNI152NLin2009aSym_res-{RES}_desc-qc_T1w.png").is_file()
    assert len(raw_orientations) > 1  # inputs really were in different orientations
    assert qc["qc_pass"].all() and (qc["template_correlation"] > 0.6).all()
    cohort = pd.read_csv(out / "cohort.tsv", sep="\t")
    assert cohort["preproc"].iloc[0] == preproc_path(out, "sub-0001").relative_to(out).as_posix()
    assert {"group", "age", "sex", "site"} <= set(cohort.columns)


def test_registration_beats_no_registration(prepared):
    """The affine registration does real work: without it the same images match the template worse."""
    bids, out = prepared
    grid = analysis_grid(3.0, 4.0)
    from neurosepclr.data.preprocess import resample_to_grid

    pid = "sub-0002"
    unregistered = resample_to_grid(
        nib.as_closest_canonical(nib.load(bids / pid / "anat" / f"{pid}_T1w.nii.gz")), grid
    )
    registered = np.asarray(nib.load(preproc_path(out, pid)).dataobj)
    r_before = np.corrcoef(unregistered[grid.brain], grid.t1[grid.brain])[0, 1]
    r_after = np.corrcoef(registered[grid.brain], grid.t1[grid.brain])[0, 1]
    assert r_after > r_before + 0.1


def test_rerun_is_a_cache_hit_and_changes_redo_only_what_they_affect(prepared, tmp_path):
    bids, out = prepared
    before = {pid: preproc_path(out, pid).stat().st_mtime_ns for pid in SUBJECTS}
    assert run(bids, out) == 0
    assert {pid: preproc_path(out, pid).stat().st_mtime_ns for pid in SUBJECTS} == before
    # replace one input *in place* (same path, new content): only that subject is redone
    source = bids / "sub-0003" / "anat" / "sub-0003_T1w.nii.gz"
    img = nib.load(source)
    data = np.asarray(img.dataobj).copy()
    data[data.shape[0] // 2] += 5
    nib.save(nib.Nifti1Image(data, img.affine, img.header), source)
    assert run(bids, out) == 0
    after = {pid: preproc_path(out, pid).stat().st_mtime_ns for pid in SUBJECTS}
    assert [pid for pid in SUBJECTS if after[pid] != before[pid]] == ["sub-0003"]


def test_a_bad_image_stops_with_its_name_and_skip_bad_excludes_it(prepared, tmp_path, capsys):
    bids, _ = prepared
    broken = tmp_path / "bids"
    shutil.copytree(bids, broken)
    target = broken / "sub-0002" / "anat" / "sub-0002_T1w.nii.gz"
    target.write_bytes(target.read_bytes()[:2000])
    out = tmp_path / "out"
    assert run(broken, out) == 65
    err = capsys.readouterr().err
    assert (
        err.startswith("neurosepclr: error: sub-0002: sub-0002/anat/sub-0002_T1w.nii.gz: ")
        and err.count("\n") == 1
    )
    assert not (out / "cohort.tsv").exists() and not (out / "sub-0001").exists()  # nothing processed
    assert run(broken, out, "--skip-bad") == 0
    excluded = pd.read_csv(out / "excluded.tsv", sep="\t")
    assert excluded["participant_id"].tolist() == ["sub-0002"]
    assert pd.read_csv(out / "qc.tsv", sep="\t")["participant_id"].tolist() == [
        "sub-0001",
        "sub-0003",
        "sub-0004",
    ]


def test_inputs_already_in_mni_space(tiny_mni_cohort, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "--quiet",
                "preprocess",
                str(tiny_mni_cohort),
                str(out),
                "--resolution",
                "3",
                "--registration",
                "none",
                "--participant-label",
                "sub-0001",
                "sub-0002",
            ]
        )
        == 0
    )
    qc = pd.read_csv(out / "qc.tsv", sep="\t")
    assert (qc["template_correlation"] > 0.8).all()
    assert not list(out.rglob("*_xfm.mat"))


@pytest.mark.slow
def test_syn_registration_writes_the_warp_field(prepared, tmp_path):
    bids, _ = prepared
    out = tmp_path / "syn"
    assert (
        main(
            [
                "--quiet",
                "preprocess",
                str(bids),
                str(out),
                "--resolution",
                "3",
                "--registration",
                "syn",
                "--participant-label",
                "sub-0001",
            ]
        )
        == 0
    )
    folder = out / "sub-0001" / "anat"
    assert (folder / "sub-0001_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.nii.gz").is_file()
    assert (folder / "sub-0001_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat").is_file()
    assert pd.read_csv(out / "qc.tsv", sep="\t")["template_correlation"].iloc[0] > 0.6


TERRITORY = next(spec.regions for spec in DEFAULT_SUBTYPES if spec.name == "medial_temporal")


@pytest.fixture(scope="module")
def morphometry_run(tmp_path_factory):
    """Two controls and two patients whose medial temporal grey matter shrank by shape alone (the
    partial-volume share set to 0), same age, no individual deformation; preprocessed at 3 mm with
    every morphometry feature (SyN switched on by the features)."""
    import neurosepclr.data.simulate as sim
    from neurosepclr.config import load_config

    root = tmp_path_factory.mktemp("morphometry")
    cfg = load_config(
        None,
        [
            "seed=3",
            "simulate.n_controls=2",
            "simulate.n_patients_per_subtype=[2, 0, 0]",
            "simulate.geometry=mni",
            "simulate.resolution=3",
            "simulate.severity=[0.6, 0.7]",
            "simulate.noise=0.3",
            "simulate.n_sites=1",
            "simulate.deformation_mm=0",
            "simulate.bias_field=0",
            "simulate.age_range=[60, 60]",
        ],
    )
    share, sim.VOLUME_PARTIAL_SHARE = sim.VOLUME_PARTIAL_SHARE, 0.0
    try:
        bids = sim.simulate(cfg, root / "bids", progress=False)  # in this process: the patch holds
    finally:
        sim.VOLUME_PARTIAL_SHARE = share
    out = root / "deriv"
    argv = ["--quiet", "preprocess", str(bids), str(out), "--resolution", "3", "--n-jobs", "2"]
    assert main([*argv, "--features", "t1", "gm", "gm_modulated", "logjacobian"]) == 0
    return bids, out


@pytest.mark.slow
def test_morphometry_features_are_template_space_maps_in_range(morphometry_run):
    _bids, out = morphometry_run
    grid = analysis_grid(3.0, 4.0)
    cohort = pd.read_csv(out / "cohort.tsv", sep="\t")
    assert {"preproc", "gm", "gm_modulated", "logjacobian"} <= set(cohort.columns)
    for row in cohort.itertuples():
        maps = {name: nib.load(out / getattr(row, name)) for name in ("gm", "gm_modulated", "logjacobian")}
        for img in maps.values():
            np.testing.assert_allclose(img.affine, grid.affine, atol=1e-5)
            assert img.shape == grid.shape and int(img.header["sform_code"]) == 4
        gm, modulated, logjac = (np.asarray(img.dataobj) for img in maps.values())
        assert gm.min() >= 0 and gm.max() <= 1 and gm[grid.brain].mean() > 0.2
        assert modulated.min() >= 0 and np.isfinite(logjac).all() and np.abs(logjac).max() < 3
        sidecar = json.loads(
            next((out / row.participant_id / "anat").glob("*_desc-preproc_T1w.json")).read_text()
        )
        assert sidecar["Registration"] == "syn" and set(sidecar["Features"]) == {
            "gm",
            "gm_modulated",
            "logjacobian",
        }
    volumes = pd.read_csv(out / "tissue_volumes.tsv", sep="\t")
    assert len(volumes) == 4 and (volumes["tiv_ml"] > 1000).all() and (volumes["tiv_ml"] < 2500).all()
    np.testing.assert_allclose(
        volumes["tiv_ml"], volumes[["csf_ml", "gm_ml", "wm_ml"]].sum(axis=1), atol=0.05
    )


@pytest.mark.slow
def test_modulated_grey_matter_measures_the_shrinkage_that_registration_hides(morphometry_run):
    from neurosepclr.atlases import load_atlas

    bids, out = morphometry_run
    cohort = pd.read_csv(out / "cohort.tsv", sep="\t")
    grid = analysis_grid(3.0, 4.0)
    territory = load_atlas("aal").resampled_to(grid.affine, grid.shape).region_mask(TERRITORY)

    def territory_sum(feature, group):
        rows = cohort[cohort["diagnosis"] == group]
        return np.mean([np.asarray(nib.load(out / p).dataobj)[territory].sum() for p in rows[feature]])

    modulated = territory_sum("gm_modulated", "PT") / territory_sum("gm_modulated", "CN") - 1
    unmodulated = territory_sum("gm", "PT") / territory_sum("gm", "CN") - 1
    truth = pd.read_csv(bids / "derivatives" / "truth" / "truth.tsv", sep="\t")
    recorded = truth.loc[truth["group"] == "PT", "gm_volume_change_medial_temporal"].mean()
    # SyN gives the shrunken territory back its template shape: the probability map barely sees the
    # loss, the Jacobian-modulated map measures most of it
    assert modulated < -0.06 and modulated < 2 * unmodulated - 0.02, (modulated, unmodulated)
    assert abs(modulated - recorded) < 0.06 and unmodulated > -0.06, (modulated, recorded, unmodulated)


def test_segmentation_leaves_no_file_in_the_temp_dir(tmp_path, monkeypatch):
    import tempfile

    from neurosepclr.data.preprocess import tissue_probabilities

    system_temp, work = tmp_path / "system", tmp_path / "work"
    system_temp.mkdir()
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    grid = analysis_grid(4.0, 4.0)
    maps = tissue_probabilities(grid.t1, grid, work)
    assert sorted(system_temp.iterdir()) == []  # ANTsPy's prior files went to the work folder
    assert maps["gm"][grid.brain].mean() > 0.2 and maps["wm"][grid.brain].mean() > 0.2


def test_warp_features_need_a_warp(capsys):
    from neurosepclr.config import load_config
    from neurosepclr.errors import ConfigError

    assert load_config(None, ["preprocess.features=[gm_modulated]"]).preprocess.registration == "syn"
    assert load_config(None, ["preprocess.features=[gm]"]).preprocess.registration == "affine"
    with pytest.raises(ConfigError, match="need a nonlinear warp"):
        load_config(None, ["preprocess.features=[logjacobian]", "preprocess.registration=none"])
    with pytest.raises(ConfigError, match="each feature once"):
        load_config(None, ["preprocess.features=[gm, gm]"])


@pytest.mark.slow
def test_training_reads_features_as_channels(morphometry_run, tmp_path, capsys):
    from neurosepclr.training.data import load_derivatives
    from neurosepclr.training.inference import load_run

    _, out = morphometry_run
    single = load_derivatives(out, 2)
    both = load_derivatives(out, 2, ("t1", "gm_modulated"))
    assert single.volumes.shape[1] == 1 and both.volumes.shape[1] == 2
    torch.testing.assert_close(both.volumes[:, :1], single.volumes)  # t1 stays channel 0
    assert (single.manifest["sha256"] != both.manifest["sha256"]).all()  # a run records what it read
    recipe = "pipelines/smoke.yaml"
    argv = ["--quiet", "train", str(out), str(tmp_path / "run"), "--config", recipe, "--set", "train.steps=2"]
    assert main([*argv, "--set", "data.features=[t1, gm_modulated]"]) == 0
    run = load_run(tmp_path / "run")
    assert run.model.common_encoder.features[0].in_channels == 2
    assert run.cohort().volumes.shape[1] == 2
    assert main([*argv, "--force", "--set", "data.features=[gm]"]) == 0
    t1_only = tmp_path / "t1only"
    shutil.copytree(out, t1_only)
    (t1_only / "cohort.tsv").write_text(
        pd.read_csv(out / "cohort.tsv", sep="\t").drop(columns=["gm_modulated"]).to_csv(sep="\t", index=False)
    )
    capsys.readouterr()
    bad = [
        "--quiet",
        "train",
        str(t1_only),
        str(tmp_path / "bad"),
        "--config",
        recipe,
        "--set",
        "data.features=[gm_modulated]",
    ]
    assert main(bad) == 66
    assert "preprocess with --features gm_modulated" in capsys.readouterr().err
