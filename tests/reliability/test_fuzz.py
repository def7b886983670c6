"""Reliability case 16: time-boxed fuzzing of the NIfTI validator and the participants.tsv reader.

Whatever the bytes, they either pass or raise one of neurosepclr's documented errors (a subclass of
``NeurosepclrError`` with an exit code); never another exception, never a crash. The harness runs a
bounded number of examples in the default suite; raise ``NEUROSEPCLR_FUZZ_EXAMPLES`` for a longer run.
"""

import gzip
import os

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurosepclr.data.cohort import GroupMapping, build_cohort
from neurosepclr.data.validate import ValidationPolicy, validate_image
from neurosepclr.errors import NeurosepclrError

EXAMPLES = int(os.environ.get("NEUROSEPCLR_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def _valid_nifti_bytes() -> bytes:
    image = nib.Nifti1Image(np.random.default_rng(0).uniform(1, 100, (6, 7, 8)).astype(np.float32), np.eye(4))
    return image.to_bytes()


SEED = _valid_nifti_bytes()


@st.composite
def mutated_nifti(draw) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 12))):
        position = draw(st.integers(0, 352 + 64))  # mostly the header, sometimes the first voxels
        data[position % len(data)] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    raw = bytes(data if cut is None else data[:cut])
    return gzip.compress(raw) if draw(st.booleans()) else raw


@FUZZ
@given(payload=st.one_of(mutated_nifti(), st.binary(max_size=600)))
def test_validator_raises_only_documented_errors(tmp_path_factory, payload):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "sub-01_T1w.nii.gz"
    path.write_bytes(payload)
    try:
        validate_image(path, "sub-01", "sub-01/anat/sub-01_T1w.nii.gz", ValidationPolicy())
    except NeurosepclrError as exc:
        assert "sub-01" in str(exc) and "\n" not in str(exc)


@FUZZ
@given(table=st.binary(max_size=400) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace")))
def test_participants_reader_raises_only_documented_errors(tmp_path_factory, table):
    root = tmp_path_factory.mktemp("bids")
    (root / "participants.tsv").write_bytes(b"participant_id\tdiagnosis\n" + table)
    (root / "sub-01" / "anat").mkdir(parents=True)  # one valid image: the table is what is tested
    (root / "sub-01" / "anat" / "sub-01_T1w.nii").write_bytes(SEED)
    try:
        build_cohort(root, GroupMapping(), None)
    except NeurosepclrError as exc:
        assert "\n" not in str(exc)
