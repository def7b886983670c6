"""Reliability case 13: a planted patient name never reaches an output, a log or the report."""

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from neurosepclr.cli import main

CANARY = "CANARY_Jane_Doe_1957"
SMOKE = str(Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml")


def _plant(bids: Path) -> None:
    participants = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str, keep_default_na=False)
    participants["patient_name"] = [f"{CANARY}_{i}" for i in range(len(participants))]
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False)
    for path in sorted(bids.glob("sub-*/anat/*_T1w.nii.gz")):
        image = nib.load(path)
        image = nib.Nifti1Image(image.get_fdata(dtype="float32"), image.affine, image.header)
        image.header["descrip"] = CANARY.encode()
        image.header["aux_file"] = CANARY[:23].encode()
        image.header["db_name"] = CANARY[:17].encode()
        nib.save(image, path)


def _leaks(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        if CANARY[:12].encode() in data:
            found.append(str(path.relative_to(folder)))
    return found


@pytest.mark.slow
def test_planted_names_never_reach_outputs(tmp_path, tiny_native_cohort, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(tiny_native_cohort, bids)
    shutil.rmtree(bids / "derivatives")
    _plant(bids)
    assert _leaks(bids)  # the canary is really there
    derivatives, run = tmp_path / "derivatives", tmp_path / "run"
    assert main(["preprocess", str(bids), str(derivatives), "--resolution", "3", "--n-jobs", "2"]) == 0
    assert main(["train", str(derivatives), str(run), "--config", SMOKE]) == 0
    assert main(["subtype", str(run), "--config", SMOKE]) == 0  # every output: report, pages, cPCA
    assert not _leaks(derivatives), _leaks(derivatives)
    assert not _leaks(run), _leaks(run)
    captured = capsys.readouterr()
    assert CANARY[:12] not in captured.out + captured.err
    for path in [*derivatives.rglob("*.nii.gz"), *run.rglob("*.nii.gz")]:
        header = nib.load(path).header
        for field in ("descrip", "aux_file", "db_name", "intent_name"):
            assert header[field].item() == b"", (path.name, field)
