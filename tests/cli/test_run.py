"""neurosepclr run: the whole study through the real CLI on the smoke pipeline, and the recipes."""

import json
from pathlib import Path

import pandas as pd
import pytest

from neurosepclr.cli import main
from neurosepclr.config import load_config
from neurosepclr.errors import ConfigError

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))
SMOKE = Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml"


@pytest.mark.parametrize("recipe", PIPELINES, ids=lambda p: p.name)
def test_every_recipe_resolves_and_refuses_unknown_keys(recipe, tmp_path):
    config = load_config(recipe)
    assert config.train.steps >= 1
    broken = tmp_path / recipe.name
    broken.write_text(recipe.read_text() + "\ntrain_typo: 1\n")
    with pytest.raises(ConfigError, match="train_typo: unknown key"):
        load_config(broken)


def test_recipes_we_promise_exist():
    names = {p.name for p in PIPELINES}
    assert {
        "demo.yaml",
        "smoke.yaml",
        "hospital-gpu.yaml",
        "my-cohort.yaml",
        "sepclr-paper-medical.yaml",
        "simclr-baseline.yaml",
    } <= names


def test_run_end_to_end_then_skips_what_is_up_to_date(tmp_path, capsys):
    work = tmp_path / "work"
    argv = ["run", str(SMOKE), "--set", f"pipeline.work_dir={work}"]
    assert main(["--quiet", *argv]) == 0
    out = capsys.readouterr().out
    assert f"report: {work / 'run' / 'subtype' / 'report.html'}" in out and "ARI" in out
    expected = [
        "bids/participants.tsv",
        "bids/derivatives/truth/truth.tsv",
        "derivatives/cohort.tsv",
        "derivatives/qc.tsv",
        "run/config.yaml",
        "run/checkpoints/last.pt",
        "run/checkpoints/best.pt",
        "run/metrics.jsonl",
        "run/embeddings.tsv",
        "run/subtype/subtypes.tsv",
        "run/subtype/stability.tsv",
        "run/subtype/report.html",
        "run/subtype/scorecard.tsv",
        "run/subtype/scorecard.json",
        "pipeline.json",
    ]
    for name in expected:
        assert (work / name).is_file(), name
    assert list((work / "run" / "subtype" / "maps").glob("subtype-S1_space-*_res-6_desc-saliency_map.nii.gz"))
    card = json.loads((work / "run" / "subtype" / "scorecard.json").read_text())
    assert "all" in card["subtypes"] and card["probes"]
    last = (work / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns

    assert main(argv) == 0  # nothing changed: every step is up to date
    err = capsys.readouterr().err
    for step in ("simulate", "train", "subtype"):
        assert f"{step}: up to date" in err, step
    assert "reused from cache" in err
    assert (work / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns == last

    assert main([*argv, "--set", "subtype.method=gmm"]) == 0  # only subtyping changes
    err = capsys.readouterr().err
    assert "train: up to date" in err and "subtype: up to date" not in err
    clusters = [*argv, "--set", "train.select=clusters"]
    assert main(clusters) == 0  # another checkpoint criterion: retrained
    assert "train: training" in capsys.readouterr().err
    assert main([*clusters, "--set", "subtype.k=2"]) == 0  # it scores checkpoints with subtype.k
    err = capsys.readouterr().err
    assert "train: training" in err and "train: up to date" not in err
    assert main(argv) == 0  # back to the first settings
    capsys.readouterr()
    assert main([*argv, "--set", "train.steps=8"]) == 0  # more steps: resumed, not restarted
    err = capsys.readouterr().err
    assert "train: resuming" in err
    steps = [json.loads(line)["step"] for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    subtypes = pd.read_csv(work / "run" / "subtype" / "subtypes.tsv", sep="\t")
    assert set(subtypes["subtype"]) >= {"control", "S1"}
    seeds = [*argv, "--set", "train.steps=8", "--set", "pipeline.consensus_seeds=[1]"]
    assert main(seeds) == 0  # a second seed on the run's split; the run itself is kept
    err = capsys.readouterr().err
    assert "train: up to date" in err and f"train: training {work / 'run-seed1'}" in err
    runs = pd.read_csv(work / "run" / "subtype" / "runs.tsv", sep="\t")
    assert runs["seed"].tolist() == [0, 1]
    split = pd.read_csv(work / "run" / "split.tsv", sep="\t")
    assert split.equals(pd.read_csv(work / "run-seed1" / "split.tsv", sep="\t"))


def test_run_on_a_missing_bids_folder_exits_66(tmp_path, capsys):
    argv = [
        "run",
        str(SMOKE),
        "--set",
        f"pipeline.work_dir={tmp_path}",
        "--set",
        f"pipeline.bids={tmp_path}/no",
    ]
    assert main(argv) == 66
    assert "does not exist; set it to your BIDS dataset" in capsys.readouterr().err


def test_config_digest_covers_the_subtype_keys_that_choose_the_checkpoint():
    from neurosepclr.runfolder import config_digest

    by_clusters = load_config(SMOKE, ["train.select=clusters"])
    for change in ("subtype.k=2", "subtype.k_range=[2, 4]", "subtype.standardise=patients"):
        assert config_digest(load_config(SMOKE, ["train.select=clusters", change])) != config_digest(
            by_clusters
        ), change
    by_diagnosis = load_config(SMOKE)  # the subtype section does not touch this run's weights
    assert config_digest(load_config(SMOKE, ["subtype.k=2"])) == config_digest(by_diagnosis)
    for change in ("subtype.method=gmm", "subtype.atlases=[aicha]", "train.steps=99"):
        assert config_digest(load_config(SMOKE, ["train.select=clusters", change])) == config_digest(
            by_clusters
        ), change


def test_runs_of_earlier_versions_keep_their_digest_so_they_still_resume():
    """The digest of pipelines/smoke.yaml as version 8c893f5 computed it (before options were removed
    and data.features added); a changed digest would refuse every earlier run's --resume."""
    from neurosepclr.runfolder import config_digest

    earlier = "923fc5ba124ad4f334cf09a8e51e1764d757af5feb72ad2ece337f2a1e44bdc8"
    assert config_digest(load_config(SMOKE)) == earlier
    assert config_digest(load_config(SMOKE, ["data.features=[t1, gm]"])) != earlier
