"""Reliability: a second command on a busy folder, file permissions, unwritable and full disks."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from neurosepclr.cli import main
from neurosepclr.errors import ExitCode, IOFailure, OutputError, TemporaryFailure
from neurosepclr.io import atomic_write_text, file_mode, folder_lock

SMOKE = str(Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml")
HOLD_LOCK = """
import sys, time
from neurosepclr.io import folder_lock
with folder_lock(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_command_on_a_locked_folder_is_refused(tmp_path, smoke_run, tiny_derivatives, capsys):
    """Case 12: another process holds the run folder; train and subtype are refused with exit 75."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(smoke_run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in smoke_run.rglob("*"))
        argv = ["train", str(tiny_derivatives), str(smoke_run), "--resume"]
        assert main(argv) == ExitCode.TEMP_FAIL
        err = capsys.readouterr().err
        expected = (
            f"{smoke_run} is in use by another neurosepclr command; wait for it to end, or use another folder"
        )
        assert err == f"neurosepclr: error: {expected}\n"
        assert sorted(p.name for p in smoke_run.rglob("*")) == before  # nothing written, no log either
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(smoke_run, "test"):  # the kernel released the killed holder's lock
        pass


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with folder_lock(tmp_path, "a"), pytest.raises(TemporaryFailure, match="in use"):
        with folder_lock(tmp_path, "b"):
            pass


@pytest.mark.parametrize(
    ("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o000, 0o664)]
)
def test_outputs_follow_the_umask_and_are_never_world_writable(tmp_path, umask, expected):
    """Case 15."""
    previous = os.umask(umask)
    try:
        assert file_mode() == expected
        path = atomic_write_text(tmp_path / "x.tsv", "a\n")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == expected and not mode & stat.S_IWOTH


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path, monkeypatch, tiny_derivatives, capsys):
    """Case 11 (read-only): simulated with EACCES, since root ignores permission bits."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=r"cannot create .*x\.tsv: Permission denied"):
        atomic_write_text(tmp_path / "x.tsv", "a")
    assert not (tmp_path / "x.tsv").exists()
    code = main(["--quiet", "train", str(tiny_derivatives), str(tmp_path / "run"), "--config", SMOKE])
    assert code == ExitCode.CANT_CREATE
    err = capsys.readouterr().err
    assert err.startswith("neurosepclr: error: cannot create") and err.count("\n") == 1
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_full_disk_keeps_the_previous_file_and_exits_74(tmp_path, monkeypatch):
    """Case 11 (disk full): simulated ENOSPC at fsync; the complete previous version stays."""
    target = atomic_write_text(tmp_path / "table.tsv", "complete\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(IOFailure, match="No space left on device") as caught:
        atomic_write_text(target, "half")
    assert caught.value.exit_code == ExitCode.IO
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.tsv"]  # no temporary file left


def test_lock_file_does_not_make_a_fresh_folder_look_like_a_run(tmp_path, tiny_derivatives):
    run = tmp_path / "run"
    with folder_lock(run, "test"):
        pass
    argv = ["--quiet", "train", str(tiny_derivatives), str(run), "--config", SMOKE, "--set", "train.steps=1"]
    assert main(argv) == 0
    assert (run / "checkpoints" / "last.pt").is_file()


def test_sessions_of_one_participant_never_straddle_the_split():
    """Case 14: the validation split is drawn per participant, not per image."""
    import numpy as np
    import pandas as pd

    from neurosepclr.training.data import stratified_split

    participants = pd.Series([f"sub-{i // 3:02d}" for i in range(60)])  # 20 participants × 3 sessions
    groups = pd.Series(["target" if i // 3 % 2 else "background" for i in range(60)])
    for seed in range(5):
        split = stratified_split(groups, 0.3, seed, participants)
        sides = pd.DataFrame({"p": participants, "s": split}).groupby("p")["s"].nunique()
        assert (sides == 1).all()
        held = set(participants[split == "val"])
        assert (
            len(held) == 6 and {p for p in held if int(p[4:]) % 2} and {p for p in held if not int(p[4:]) % 2}
        )
        assert np.array_equal(split, stratified_split(groups, 0.3, seed, participants))  # reproducible


def test_resume_with_a_changed_input_image_is_refused_with_both_hashes(tmp_path, tiny_derivatives, capsys):
    """Case 9 (inputs): one preprocessed image changed in place after the checkpoint."""
    import shutil

    import nibabel as nib
    import pandas as pd

    derivatives = tmp_path / "derivatives"
    shutil.copytree(tiny_derivatives, derivatives)
    run = tmp_path / "run"
    argv = ["--quiet", "train", str(derivatives), str(run), "--config", SMOKE, "--set", "train.steps=2"]
    assert main(argv) == 0
    first = derivatives / pd.read_csv(derivatives / "cohort.tsv", sep="\t")["preproc"].iloc[0]
    image = nib.load(first)
    nib.save(nib.Nifti1Image(image.get_fdata() + 1.0, image.affine, image.header), first)
    checkpoint = (run / "checkpoints" / "last.pt").read_bytes()
    assert main([*argv[:-1], "train.steps=4", "--resume"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "--resume refused: inputs changed since the checkpoint (checkpoint " in err and ", now " in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == checkpoint  # nothing overwritten
