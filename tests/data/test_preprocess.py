"""neurosepclr preprocess on a tiny misaligned, re-oriented cohort: template space, QC, cache, errors."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurosepclr.cli import main
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
