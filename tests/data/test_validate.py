"""Image validation: each rule with a crafted bad file, its exact one-line error, nothing modified."""

import gzip
import hashlib
import re

import nibabel as nib
import numpy as np
import pytest

from neurosepclr.data.validate import ValidationPolicy, validate_image
from neurosepclr.errors import InputDataError, MissingInputError
from tests.data.builders import write_nifti


def check(path, message, **policy):
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    with pytest.raises(InputDataError) as caught:
        validate_image(path, "sub-01", "sub-01/anat/sub-01_T1w.nii.gz", ValidationPolicy(**policy))
    text = str(caught.value)
    assert text.startswith("sub-01: sub-01/anat/sub-01_T1w.nii.gz: ") and "\n" not in text
    assert message in text, text
    if before is not None:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # input untouched
    return text


def test_valid_image_passes(tmp_path):
    result = validate_image(write_nifti(tmp_path / "ok.nii.gz"), "sub-01")
    assert result.data.shape == (8, 9, 10) and result.data.dtype == np.float32
    assert result.warnings == [] and np.allclose(result.affine, np.diag([2, 2, 2, 1]))


def test_truncated_gzip(tmp_path):
    path = write_nifti(tmp_path / "t.nii.gz", shape=(40, 40, 40))
    path.write_bytes(path.read_bytes()[:-3000])
    check(path, "")  # either the trailer check or the decoder names it


def test_truncated_uncompressed(tmp_path):
    path = write_nifti(tmp_path / "t.nii", shape=(20, 20, 20))
    path.write_bytes(path.read_bytes()[:-1000])
    check(path, "truncated: the header needs")


def test_plain_nifti_named_gz_and_the_reverse(tmp_path):
    plain = write_nifti(tmp_path / "a.nii")
    renamed = tmp_path / "b.nii.gz"
    renamed.write_bytes(plain.read_bytes())
    check(renamed, "named .nii.gz but not gzip-compressed")
    gz = write_nifti(tmp_path / "c.nii.gz")
    wrong = tmp_path / "d.nii"
    wrong.write_bytes(gz.read_bytes())
    check(wrong, "gzip-compressed but named .nii")


def test_empty_and_random_bytes(tmp_path):
    empty = tmp_path / "e.nii.gz"
    empty.write_bytes(b"")
    check(empty, "empty file")
    noise = tmp_path / "n.nii"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    check(noise, "not a readable NIfTI header")


def test_huge_declared_volume_is_refused_before_loading(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header.set_data_shape((2000, 2000, 2000))
    raw = img.header.binaryblock + b"\0" * 4 + b"\0" * 256
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(raw))
    check(path, "header declares (2000, 2000, 2000) = 8000000000 voxels, above the limit")
    small = tmp_path / "lying.nii.gz"
    img.header.set_data_shape((300, 300, 300))
    small.write_bytes(gzip.compress(img.header.binaryblock + b"\0" * 260))
    check(small, "truncated: the header needs")


def test_dimensionality(tmp_path):
    check(
        write_nifti(tmp_path / "4d.nii.gz", data=np.ones((5, 5, 5, 2), np.float32)),
        "expected a 3D image, got shape (5, 5, 5, 2)",
    )
    check(
        write_nifti(tmp_path / "2d.nii.gz", data=np.ones((5, 5), np.float32)),
        "expected a 3D image, got shape (5, 5)",
    )
    data = np.random.default_rng(0).random((5, 6, 7, 1)).astype(np.float32)
    result = validate_image(write_nifti(tmp_path / "s.nii.gz", data=data), "sub-01")
    assert result.data.shape == (5, 6, 7)
    assert result.warnings == ["4D image with one volume (5, 6, 7, 1): used as 3D"]


def test_non_finite_voxels(tmp_path):
    data = np.random.default_rng(0).uniform(1, 2, (40, 40, 40)).astype(np.float32)
    data[0, 0, 0] = np.nan
    few = validate_image(write_nifti(tmp_path / "few.nii.gz", data=data), "sub-01")
    assert few.nonfinite_voxels == 1 and few.warnings == ["1 NaN/Inf voxels set to 0"]
    assert np.isfinite(few.data).all()
    data[:5] = np.inf
    check(
        write_nifti(tmp_path / "many.nii.gz", data=data),
        "8000 NaN/Inf voxels (12.50%), above the limit of 0.01%",
    )
    check(
        write_nifti(tmp_path / "all.nii.gz", data=np.full((5, 5, 5), np.nan, np.float32)),
        "NaN/Inf voxels (100.00%)",
    )


def test_constant_and_empty_images(tmp_path):
    check(write_nifti(tmp_path / "z.nii.gz", data=np.zeros((5, 5, 5), np.float32)), "image is all zeros")
    check(
        write_nifti(tmp_path / "c.nii.gz", data=np.full((5, 5, 5), 7.0, np.float32)), "image is constant (7)"
    )


def test_affines(tmp_path):
    check(write_nifti(tmp_path / "sing.nii.gz", affine=np.diag([2.0, 0.0, 2.0, 1.0])), "affine is singular")
    check(
        write_nifti(tmp_path / "tiny.nii.gz", affine=np.diag([0.01, 1.0, 1.0, 1.0])),
        "voxel size 0.01×1×1 mm outside",
    )
    check(
        write_nifti(tmp_path / "big.nii.gz", affine=np.diag([20.0, 1.0, 1.0, 1.0])),
        "voxel size 20×1×1 mm outside",
    )
    path = write_nifti(tmp_path / "nocode.nii.gz")
    img = nib.load(path)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, img.header), tmp_path / "nocode2.nii.gz")
    check(tmp_path / "nocode2.nii.gz", "no spatial orientation")


def test_qform_sform_disagreement_uses_the_sform_with_a_warning(tmp_path):
    path = write_nifti(tmp_path / "q.nii.gz")
    img = nib.load(path)
    shifted = img.affine.copy()
    shifted[0, 3] += 5.0
    img.set_qform(shifted, code=1)
    nib.save(img, tmp_path / "q2.nii.gz")
    result = validate_image(tmp_path / "q2.nii.gz", "sub-01")
    assert np.allclose(result.affine, img.get_sform())
    assert result.warnings == ["qform and sform disagree by up to 5.0 mm: the sform is used"]


def test_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match=re.escape("sub-01: x.nii.gz: file not found")):
        validate_image(tmp_path / "x.nii.gz", "sub-01")
