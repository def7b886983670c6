"""Reliability case 2: lying headers are refused before any large allocation (peak memory measured)."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from neurosepclr.data.validate import ValidationPolicy, validate_image
from neurosepclr.errors import InputDataError


def _peak_bytes_while_refusing(path, match):
    tracemalloc.start()
    try:
        with pytest.raises(InputDataError, match=match):
            validate_image(path, "sub-01", "sub-01/anat/sub-01_T1w.nii.gz", ValidationPolicy())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", [(300, 300, 300), (500, 500, 400)])
def test_a_tiny_file_declaring_a_huge_volume_costs_no_memory(tmp_path, shape):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)  # 108 MB and 400 MB of float32 declared, 352 bytes given
    path = tmp_path / "lying.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1024))
    peak = _peak_bytes_while_refusing(path, "sub-01: sub-01/anat/sub-01_T1w.nii.gz: truncated")
    assert peak < 5 * 2**20, f"{peak / 2**20:.1f} MiB allocated before refusing"


def test_an_oversized_extension_is_refused(tmp_path):
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 3_000_000))
    path = tmp_path / "ext.nii.gz"
    nib.save(image, path)
    peak = _peak_bytes_while_refusing(path, "header extensions of .* bytes exceed 1000000")
    assert peak < 20 * 2**20
