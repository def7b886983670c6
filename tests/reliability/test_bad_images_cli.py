"""Reliability cases 1–4 through the real command: exit 65, one line naming subject and file, inputs
untouched, nothing written for the bad image (and, without --skip-bad, no subject processed)."""

import gzip
import hashlib

import numpy as np
import pandas as pd
import pytest

from neurosepclr.cli import main
from tests.data.builders import write_bids, write_nifti

ROWS = [("sub-01", "CN"), ("sub-02", "PT"), ("sub-03", "CN")]


def _truncated(path):
    path.write_bytes(path.read_bytes()[:200])


def _plain_named_gz(path):
    path.write_bytes(gzip.decompress(path.read_bytes()))


def _random(path):
    path.write_bytes(np.random.default_rng(0).bytes(5000))


BAD = {
    "truncated": (_truncated, "truncated"),
    "plain-named-gz": (_plain_named_gz, "named .nii.gz but not gzip-compressed"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "random-bytes": (_random, "named .nii.gz but not gzip-compressed"),
    "4d": (lambda p: write_nifti(p, data=np.ones((5, 5, 5, 2), np.float32)), "expected a 3D image"),
    "all-nan": (lambda p: write_nifti(p, data=np.full((6, 6, 6), np.nan, np.float32)), "NaN/Inf voxels"),
    "constant": (lambda p: write_nifti(p, data=np.full((6, 6, 6), 3.0, np.float32)), "image is constant"),
    "singular-affine": (lambda p: write_nifti(p, affine=np.diag([2.0, 0.0, 2.0, 1.0])), "affine is singular"),
    "absurd-voxels": (lambda p: write_nifti(p, affine=np.diag([30.0, 1.0, 1.0, 1.0])), "voxel size"),
}


def _hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_image_stops_preprocess_before_any_output(tmp_path, kind, capsys):
    bids = write_bids(tmp_path / "bids", ROWS)
    bad = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    damage, message = BAD[kind]
    damage(bad)
    before = _hashes(bids)
    out = tmp_path / "derivatives"
    assert main(["--quiet", "preprocess", str(bids), str(out), "--registration", "none"]) == 65
    err = capsys.readouterr().err
    assert err.startswith("neurosepclr: error: sub-02: sub-02/anat/sub-02_T1w.nii.gz: ") and message in err
    assert err.count("\n") == 1
    assert _hashes(bids) == before  # no input modified
    assert not list(out.rglob("*.nii*")) and not (out / "cohort.tsv").exists()  # nothing looks complete


def test_skip_bad_lists_the_image_and_processes_the_others(tmp_path, tiny_mni_cohort):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(tiny_mni_cohort, bids)
    shutil.rmtree(bids / "derivatives")
    images = sorted(bids.glob("sub-*/anat/*_T1w.nii.gz"))
    bad_id = images[0].name.split("_")[0]
    _truncated(images[0])
    out = tmp_path / "derivatives"
    argv = ["--quiet", "preprocess", str(bids), str(out), "--registration", "none", "--resolution", "3"]
    assert main([*argv, "--skip-bad", "--n-jobs", "2"]) == 0
    excluded = pd.read_csv(out / "excluded.tsv", sep="\t")
    assert excluded["participant_id"].tolist() == [bad_id]
    assert "truncated" in excluded["reason"].iloc[0], excluded["reason"].iloc[0]
    assert not list(out.glob(f"{bad_id}/**/*.nii*"))
    kept = set(pd.read_csv(out / "cohort.tsv", sep="\t")["participant_id"])
    assert kept == {p.name.split("_")[0] for p in images[1:]}
