"""neurosepclr evaluate: the scorecard on perfect, random and structured predictions."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from neurosepclr.analysis.evaluate import (
    embedding_spaces,
    evaluate,
    match_labels,
    saliency_localisation,
)
from neurosepclr.atlases import load_atlas
from neurosepclr.cli import main
from neurosepclr.data.truth import load_truth
from neurosepclr.errors import InputDataError, MissingInputError

SUBTYPES = ["medial_temporal", "frontal", "parietal_posterior"]


@pytest.fixture
def big_truth(tmp_path, tiny_mni_cohort):
    """The tiny cohort's truth masks with a large synthetic table (120 controls, 3 × 100 patients)."""
    folder = tmp_path / "truth"
    shutil.copytree(tiny_mni_cohort / "derivatives" / "truth", folder)
    rng = np.random.default_rng(0)
    groups = ["CN"] * 120 + ["PT"] * 300
    subtypes = ["n/a"] * 120 + [SUBTYPES[i % 3] for i in range(300)]
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:04d}" for i in range(1, 421)],
            "group": groups,
            "subtype": subtypes,
            "age": rng.uniform(55, 85, 420).round(1),
            "sex": rng.choice(["F", "M"], 420),
            "site": rng.choice(["siteA", "siteB", "siteC"], 420),
        }
    )
    table.to_csv(folder / "truth.tsv", sep="\t", index=False)
    return folder


def write_predictions(folder, table, labels, split=None):
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {"participant_id": table["participant_id"], "group": table["group"], "subtype": labels}
    )
    if split is not None:
        frame["split"] = split
    frame.to_csv(folder / "subtypes.tsv", sep="\t", index=False, na_rep="n/a")
    return folder


def test_perfect_predictions_score_one_whatever_the_label_names(tmp_path, big_truth):
    table = load_truth(big_truth).table
    renamed = table["subtype"].map({"medial_temporal": "2", "frontal": "0", "parietal_posterior": "1"})
    card = evaluate(write_predictions(tmp_path / "run", table, renamed), big_truth)
    assert card["subtypes"]["all"]["ari"] == pytest.approx(1.0)
    assert card["subtypes"]["all"]["ami"] == pytest.approx(1.0)
    assert card["label_matching"] == {"0": "frontal", "1": "parietal_posterior", "2": "medial_temporal"}
    scorecard = pd.read_csv(tmp_path / "run" / "scorecard.tsv", sep="\t")
    assert set(scorecard["metric"]) == {"ari", "ami"}
    assert json.loads((tmp_path / "run" / "scorecard.json").read_text())["subtypes"]["all"]["n"] == 300


def test_random_predictions_score_near_zero(tmp_path, big_truth):
    table = load_truth(big_truth).table
    labels = np.where(
        table["group"] == "PT", np.random.default_rng(1).integers(0, 3, len(table)).astype(str), "n/a"
    )
    card = evaluate(write_predictions(tmp_path / "run", table, labels), big_truth)
    assert abs(card["subtypes"]["all"]["ari"]) < 0.03
    assert abs(card["subtypes"]["all"]["ami"]) < 0.03


def test_held_out_subset_is_scored_separately(tmp_path, big_truth):
    table = load_truth(big_truth).table
    split = np.where(np.arange(len(table)) % 4 == 0, "test", "train")
    labels = table["subtype"].where(split == "test", "0")  # wrong on train, right on test
    card = evaluate(write_predictions(tmp_path / "run", table, labels, split), big_truth)
    assert card["subtypes"]["held_out"]["ari"] == pytest.approx(1.0)
    assert card["subtypes"]["all"]["ari"] < 0.5


def test_probe_table_reads_each_space_and_uses_the_split(tmp_path, big_truth):
    table = load_truth(big_truth).table
    rng = np.random.default_rng(2)
    n = len(table)
    is_patient = (table["group"] == "PT").to_numpy()
    codes = (
        table["subtype"]
        .map({"medial_temporal": 0, "frontal": 1, "parietal_posterior": 2})
        .fillna(-1)
        .to_numpy()
    )
    salient = rng.normal(0, 0.3, (n, 4))
    salient[is_patient, 0] += 3.0
    salient[is_patient, 1] += 2.0 * codes[is_patient]
    common = rng.normal(0, 0.3, (n, 4))
    common[:, 0] += (table["age"].to_numpy() - 70) / 5
    frame = pd.DataFrame(
        {"participant_id": table["participant_id"], "split": np.where(np.arange(n) % 4 == 0, "test", "train")}
    )
    for k in range(4):
        frame[f"salient_{k}"] = salient[:, k]
        frame[f"common_{k}"] = common[:, k]
    (tmp_path / "run").mkdir()
    frame.to_csv(tmp_path / "run" / "embeddings.tsv", sep="\t", index=False)
    assert embedding_spaces(frame) == {
        "salient": [f"salient_{k}" for k in range(4)],
        "common": [f"common_{k}" for k in range(4)],
    }
    probes = pd.DataFrame(evaluate(tmp_path / "run", big_truth)["probes"])
    get = probes.set_index(["space", "task", "metric"])["value"]
    assert get["salient", "diagnosis", "balanced_accuracy"] > 0.95
    assert abs(get["common", "diagnosis", "balanced_accuracy"] - 0.5) < 0.12
    assert get["salient", "subtype", "balanced_accuracy"] > 0.95
    assert get["common", "age", "r2"] > 0.9 > 0.1 > get["salient", "age", "r2"]
    assert abs(get["salient", "sex", "balanced_accuracy"] - 0.5) < 0.12
    assert (probes["n"] == n // 4).any()  # scored on the held-out quarter only


def test_saliency_localisation_inside_mask_and_region_ranks(big_truth):
    truth = load_truth(big_truth)
    mask = truth.masks["medial_temporal"]
    atlas = load_atlas("aal")
    perfect = saliency_localisation(mask, mask, truth.regions["medial_temporal"], atlas)
    assert perfect["mass_inside"] == pytest.approx(1.0)
    assert perfect["best_region_rank"] <= 2
    noise = nib.Nifti1Image(np.random.default_rng(3).random(mask.shape), mask.affine)
    diffuse = saliency_localisation(noise, mask, truth.regions["medial_temporal"], atlas)
    assert diffuse["mass_inside"] == pytest.approx(diffuse["volume_fraction"], rel=0.1)


def test_saliency_maps_are_found_matched_and_scored(tmp_path, big_truth):
    truth = load_truth(big_truth)
    table = truth.table
    labels = table["subtype"].map({"medial_temporal": "1", "frontal": "2", "parietal_posterior": "3"})
    run = write_predictions(tmp_path / "run", table, labels)
    (run / "maps").mkdir()
    nib.save(truth.masks["frontal"], run / "maps" / "subtype-2_desc-saliency_map.nii.gz")
    card = evaluate(run, big_truth)
    assert card["saliency"]["2"]["matched_subtype"] == "frontal"
    assert card["saliency"]["2"]["mass_inside"] == pytest.approx(1.0)


def test_label_matching_is_one_to_one():
    predicted = np.array(["a", "a", "b", "b", "c"])
    true = np.array(["x", "x", "y", "x", "z"])
    assert match_labels(predicted, true) == {"a": "x", "b": "y", "c": "z"}


def test_errors_name_the_file_and_exit_with_the_documented_code(tmp_path, big_truth, capsys):
    table = load_truth(big_truth).table
    bad = table.copy()
    bad.loc[0, "participant_id"] = "sub-9999"
    run = write_predictions(tmp_path / "run", bad, bad["subtype"])
    with pytest.raises(InputDataError, match="sub-9999"):
        evaluate(run, big_truth)
    assert main(["evaluate", str(run), "--truth", str(big_truth)]) == 65
    assert "subtypes.tsv: 1 participant(s) not in the truth table: sub-9999" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError):
        evaluate(tmp_path / "empty", big_truth)
    assert main(["evaluate", str(tmp_path / "empty"), "--truth", str(tmp_path)]) == 66


def test_cli_prints_the_scorecard(tmp_path, big_truth, capsys):
    table = load_truth(big_truth).table
    run = write_predictions(tmp_path / "run", table, table["subtype"])
    assert main(["evaluate", str(run), "--truth", str(big_truth), "--out", str(tmp_path / "card")]) == 0
    assert "ARI 1.000" in capsys.readouterr().out
    assert (tmp_path / "card" / "scorecard.tsv").is_file()


def test_contrastive_pca_finds_the_target_only_direction():
    from neurosepclr.analysis.baselines import ContrastivePCA

    rng = np.random.default_rng(0)
    shared = rng.normal(0, 5.0, (400, 1)) * np.array([[1.0, 1.0, 0.0, 0.0]])  # big, in both groups
    x = shared + rng.normal(0, 0.1, (400, 4))
    y = np.arange(400) >= 200
    x[y, 2] += rng.choice([-2.0, 2.0], y.sum())  # target-only, bimodal: two "subtypes"
    cpca = ContrastivePCA(n_components=1, alpha=2.0, n_joint=4).fit(x, y)
    direction = cpca.pca_.components_.T @ cpca.components_[0]
    assert abs(direction[2]) > 0.95  # not the large shared direction
    plain = PCA(1).fit(x[y]).components_[0]
    assert abs(plain[2]) < 0.5
