"""Guards that fail early, with one line naming the fix and the documented exit code, before
anything is written (issue 23)."""

from pathlib import Path

import pandas as pd

from neurosepclr.cli import main
from tests.data.builders import write_bids

RECIPES = Path(__file__).resolve().parents[2] / "pipelines"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("neurosepclr: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    return errors[0]


def test_a_real_cohort_recipe_without_its_bids_folder_is_refused(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["run", str(RECIPES / "hospital-gpu.yaml"), "--set", f"pipeline.work_dir={work}"]) == 66
    err = one_line_error(capsys)
    assert "pipeline.bids: /path/to/bids does not exist" in err and "--set pipeline.bids=DIR" in err
    assert not work.exists()  # nothing simulated, no work folder


def test_a_missing_optional_dependency_names_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ants" else real(name, *a)
    )
    root = write_bids(tmp_path / "bids", [("sub-01", "CN"), ("sub-02", "PT")])
    out = tmp_path / "deriv"
    assert main(["preprocess", str(root), str(out)]) == 69
    assert "pip install 'neurosepclr[preprocess]'" in one_line_error(capsys)
    assert not out.exists()


def test_preprocess_refuses_a_folder_holding_something_else(tmp_path, capsys):
    root = write_bids(tmp_path / "bids", [("sub-01", "CN"), ("sub-02", "PT")])
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("keep me")
    assert main(["preprocess", str(root), str(out)]) == 73
    assert "holds other files (chapter1.tex) and is not a neurosepclr derivatives folder" in one_line_error(
        capsys
    )
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]  # no logs/, no lock


def test_train_refuses_a_folder_holding_something_else_before_writing(tiny_derivatives, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    assert main(["train", str(tiny_derivatives), str(run), "--set", "train.steps=1"]) == 73
    assert "holds other files (notes.txt)" in one_line_error(capsys)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_train_on_too_few_subjects_says_the_minimum(tiny_derivatives, tmp_path, capsys):
    small = tmp_path / "deriv"
    small.mkdir()
    table = pd.read_csv(tiny_derivatives / "cohort.tsv", sep="\t", dtype=str)
    two = pd.concat([table[table["group"] == "background"][:1], table[table["group"] == "target"][:1]])
    two.to_csv(small / "cohort.tsv", sep="\t", index=False)
    run = tmp_path / "run"
    assert main(["train", str(small), str(run), "--set", "train.steps=1"]) == 65
    err = one_line_error(capsys)
    assert "too few subjects to train: 1 controls and 1 patients in training, 0 and 0 in validation" in err
    assert "at least 1 of each in training and 1 of each in validation are needed" in err
    assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
