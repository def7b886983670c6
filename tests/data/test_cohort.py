"""Cohort table: group mapping, sessions, filters, and every table problem reported at once."""

import os
import re

import pytest

from neurosepclr.data.cohort import GroupMapping, build_cohort, read_participants
from neurosepclr.errors import InputDataError, MissingInputError
from tests.data.builders import write_bids

ROWS = [("sub-01", "CN"), ("sub-02", "PT"), ("sub-03", "PT")]


def test_simulated_cohort_needs_no_group_options(tiny_native_cohort):
    cohort = build_cohort(tiny_native_cohort)
    assert len(cohort) == 10
    assert list(cohort.frame.columns[:4]) == ["participant_id", "session_id", "path", "group"]
    assert cohort.frame["group"].value_counts().to_dict() == {"target": 6, "background": 4}
    assert {"age", "sex", "site", "diagnosis"} <= set(cohort.frame.columns)
    assert cohort.frame["path"].iloc[0] == "sub-0001/anat/sub-0001_T1w.nii.gz"


def test_group_mapping_is_configured(tmp_path):
    root = write_bids(
        tmp_path / "bids",
        [("sub-01", "HC"), ("sub-02", "AD"), ("sub-03", "FTD")],
        header="participant_id\tgroup",
    )
    mapping = GroupMapping("group", ("HC",), ("AD", "FTD"))
    frame = build_cohort(root, mapping).frame
    assert frame["group"].tolist() == ["background", "target", "target"]
    assert frame["group_label"].tolist() == ["HC", "AD", "FTD"]
    with pytest.raises(InputDataError, match="no group column 'diagnosis'"):
        build_cohort(root)


def test_sessions_and_participant_label(tmp_path):
    root = write_bids(tmp_path / "bids", ROWS, sessions=["ses-M000", "ses-M012"])
    cohort = build_cohort(root)
    assert len(cohort) == 6
    assert sorted(set(cohort.frame["session_id"])) == ["ses-M000", "ses-M012"]
    assert cohort.frame["path"].iloc[0] == "sub-01/ses-M000/anat/sub-01_ses-M000_T1w.nii.gz"
    only = build_cohort(root, participant_labels=["02", "sub-03"])
    assert sorted(set(only.frame["participant_id"])) == ["sub-02", "sub-03"]
    with pytest.raises(
        InputDataError, match=re.escape("--participant-label not in participants.tsv: sub-09")
    ):
        build_cohort(root, participant_labels=["09"])


def test_every_problem_is_reported_at_once(tmp_path):
    rows = [
        ("sub-01", "CN"),
        ("sub-01", "PT"),
        ("sub-02", "XX"),
        ("sub_3", "CN"),
        ("sub-04", "PT"),
        ("sub-05", "n/a"),
    ]
    root = write_bids(tmp_path / "bids", rows, images=["sub-01", "sub-02", "sub-05", "sub-06"])
    with pytest.raises(InputDataError) as caught:
        build_cohort(root)
    message = str(caught.value)
    assert "\n" not in message
    for expected in [
        "lines 2, 3: duplicate participant_id sub-01",
        "diagnosis values that are neither background (CN) nor target (PT): "
        "'XX' (1: sub-02); n/a (missing) (1: sub-05); map them with --background/--target",
        "leave them out with --exclude (data.exclude)",
        "line 5: participant_id 'sub_3' is not a BIDS label",
        "sub-06/anat/sub-06_T1w.nii.gz: image of sub-06, who has no row in participants.tsv",
        "sub-04: no T1w image found",
    ]:
        assert expected in message, expected


def test_excluded_groups_are_left_out_and_unmapped_ones_listed_with_the_fix(tmp_path):
    rows = [("sub-01", "CN"), ("sub-02", "AD"), ("sub-03", "MCI"), ("sub-04", "MCI"), ("sub-05", "AD")]
    root = write_bids(tmp_path / "bids", rows)
    with pytest.raises(InputDataError) as caught:
        build_cohort(root, GroupMapping("diagnosis", ("CN",), ("AD",)))
    assert "'MCI' (2: sub-03, sub-04)" in str(caught.value) and "--exclude" in str(caught.value)
    frame = build_cohort(root, GroupMapping("diagnosis", ("CN",), ("AD",), exclude=("MCI",))).frame
    assert frame["participant_id"].tolist() == ["sub-01", "sub-02", "sub-05"]
    assert frame["group"].tolist() == ["background", "target", "target"]


def test_missing_participants_table_says_what_it_needs(tmp_path):
    root = write_bids(tmp_path / "bids", ROWS)
    (root / "participants.tsv").unlink()
    with pytest.raises(MissingInputError, match=r"participant_id and the group column.*docs/data\.md"):
        build_cohort(root)


def test_ids_stay_strings_and_text_encodings(tmp_path):
    root = write_bids(tmp_path / "bids", [("sub-001", "CN"), ("sub-1", "PT")])
    assert build_cohort(root).frame["participant_id"].tolist() == ["sub-001", "sub-1"]
    tsv = root / "participants.tsv"
    tsv.write_bytes(b"\xef\xbb\xbfparticipant_id\tdiagnosis\r\nsub-001\tCN\r\nsub-1\tPT\r\n")  # BOM + CRLF
    assert read_participants(tsv)["participant_id"].tolist() == ["sub-001", "sub-1"]
    tsv.write_bytes("participant_id\tdiagnosis\tsite\nsub-001\tCN\tZ\xfcrich\n".encode("latin-1"))
    with pytest.raises(InputDataError, match=re.escape("participants.tsv: line 2 is not UTF-8")):
        read_participants(tsv)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("participant_id\tdiagnosis\tparticipant_id\nsub-1\tCN\tsub-2\n", "duplicate column"),
        ("participant_id\tdiagnosis\nsub-1\tCN\textra\n", "line 2 has 3 fields, the header has 2"),
        ("subject\tdiagnosis\nsub-1\tCN\n", "no participant_id column"),
        ("", "empty file"),
    ],
)
def test_malformed_participants_tables(tmp_path, text, message):
    path = tmp_path / "participants.tsv"
    path.write_text(text)
    with pytest.raises(InputDataError, match=message):
        read_participants(path)


def test_paths_escaping_the_dataset_are_refused(tmp_path):
    root = write_bids(tmp_path / "bids", ROWS, images=["sub-01", "sub-02"])
    outside = write_bids(tmp_path / "elsewhere", [("sub-03", "PT")])
    (root / "sub-03" / "anat").mkdir(parents=True)
    os.symlink(
        outside / "sub-03" / "anat" / "sub-03_T1w.nii.gz", root / "sub-03" / "anat" / "sub-03_T1w.nii.gz"
    )
    with pytest.raises(
        InputDataError, match=re.escape("sub-03: sub-03/anat/sub-03_T1w.nii.gz points outside the dataset")
    ):
        build_cohort(root)


def test_missing_dataset(tmp_path):
    with pytest.raises(MissingInputError):
        build_cohort(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match=re.escape("participants.tsv: not found")):
        build_cohort(tmp_path / "empty")
