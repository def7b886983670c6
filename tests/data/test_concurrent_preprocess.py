"""Several ``preprocess`` processes on one derivatives folder: shards, overlap, the group step."""

import hashlib
import os
import subprocess
import sys

import pandas as pd
import pytest

from neurosepclr.cli import main
from neurosepclr.config import load_config
from neurosepclr.data.cohort import build_cohort, parse_shard, select_shard
from neurosepclr.data.preprocess import STATE, lock_path, params_hash
from neurosepclr.errors import ExitCode, UsageError
from neurosepclr.io import file_lock

SUBJECTS = ["sub-0001", "sub-0002", "sub-0003", "sub-0004"]  # shards 0/2 and 1/2 take two each
GROUP_FILES = ("cohort.tsv", "qc.tsv", "preprocess.yaml", "tpl-MNI152NLin2009aSym_res-3_T1w.nii.gz")


def preprocess_command(bids, out, *extra):
    return [sys.executable, "-m", "neurosepclr", "--quiet", "preprocess", str(bids), str(out),
            "--resolution", "3", "--n-jobs", "1", *extra]  # fmt: skip


def single_threaded():
    """The same ITK thread count in every process, so registrations agree bit for bit."""
    return {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1"}


def folder_digest(folder):
    """SHA-256 of every file of a derivatives folder, logs and bookkeeping aside."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not {"logs", STATE} & set(p.relative_to(folder).parts)
    )
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_three_concurrent_processes_on_overlapping_shards_equal_one_process(tiny_native_cohort, tmp_path):
    env = single_threaded()
    reference, shared = tmp_path / "reference", tmp_path / "shared"
    labels = ["--participant-label", *SUBJECTS]
    subprocess.run(preprocess_command(tiny_native_cohort, reference, *labels), env=env, check=True)
    processes = [
        subprocess.Popen(
            preprocess_command(tiny_native_cohort, shared, *extra), env=env, stderr=subprocess.PIPE
        )
        for extra in (
            [*labels, "--shard", "0/2"],
            [*labels, "--shard", "1/2"],
            ["--participant-label", "sub-0002", "sub-0003"],  # one subject of each shard
        )
    ]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode()

    expected = folder_digest(reference)
    assert {name for name in expected if name.endswith("_desc-preproc_T1w.nii.gz")} == {
        f"{pid}/anat/{pid}_space-MNI152NLin2009aSym_res-3_desc-preproc_T1w.nii.gz" for pid in SUBJECTS
    }
    assert folder_digest(shared) == expected  # images, sidecars, QC mosaics and group tables alike
    # every subject was processed once: the overlapping process waited on the subject locks
    sidecars = sorted(shared.glob("sub-*/anat/*_desc-preproc_T1w.json"))
    assert len(sidecars) == len(SUBJECTS)

    # the group step alone rebuilds the same tables from the per-subject records
    for name in GROUP_FILES:
        (shared / name).unlink()
    assert main(["--quiet", "preprocess", str(tiny_native_cohort), str(shared), "--resolution", "3",
                 "--n-jobs", "1", "--group-only"]) == 0  # fmt: skip
    assert folder_digest(shared) == expected


def test_a_process_with_other_settings_is_refused_while_one_works(tiny_native_cohort, tmp_path, capsys):
    out = tmp_path / "out"
    other = load_config(None, ["preprocess.resolution=4"]).preprocess
    with file_lock(lock_path(out, f"settings-{params_hash(other)[:16]}"), shared=True):  # a running process
        code = main(["--quiet", "preprocess", str(tiny_native_cohort), str(out), "--resolution", "3",
                     "--participant-label", "sub-0001"])  # fmt: skip
    assert code == ExitCode.TEMP_FAIL
    err = capsys.readouterr().err
    assert "being preprocessed by another process with different settings" in err and err.count("\n") == 1
    assert not list(out.glob("sub-*")) and not (out / "cohort.tsv").exists()  # nothing processed


def test_shards_partition_the_participants(tiny_native_cohort):
    cohort = build_cohort(tiny_native_cohort)
    shards = [select_shard(cohort, i, 3) for i in range(3)]
    chosen = [set(s.frame["participant_id"]) for s in shards]
    assert sum(len(c) for c in chosen) == len(cohort) and set.union(*chosen) == set(
        cohort.frame["participant_id"]
    )
    assert [len(c) for c in chosen] == [4, 3, 3]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(UsageError, match="expected I/N"):
            parse_shard(bad)


def test_group_only_refuses_a_selection_and_reports_foreign_settings(
    tiny_derivatives, tiny_native_cohort, capsys
):
    assert main(["--quiet", "preprocess", str(tiny_native_cohort), str(tiny_derivatives), "--group-only",
                 "--shard", "0/2"]) == ExitCode.USAGE  # fmt: skip
    before = pd.read_csv(tiny_derivatives / "cohort.tsv", sep="\t")
    code = main(["--quiet", "preprocess", str(tiny_native_cohort), str(tiny_derivatives), "--group-only",
                 "--resolution", "4"])  # fmt: skip
    assert code == ExitCode.DATA
    assert "no subject preprocessed with these settings" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(tiny_derivatives / "cohort.tsv", sep="\t"), before)  # untouched
