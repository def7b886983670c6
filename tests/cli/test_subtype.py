"""neurosepclr subtype on the smoke run: outputs, maps in template space, --cohort, refusals, report."""

import datetime
import json
import os
import pickle
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurosepclr.cli import main


def training_map(out, label, desc, feature=None):
    """A subtype map on the training grid (the coarser of the two grids maps are written on)."""
    entity = f"_feature-{feature}" if feature else ""
    found = sorted(
        (out / "maps").glob(f"subtype-{label}{entity}_space-MNI152NLin2009aSym_res-*_desc-{desc}_map.nii.gz"),
        key=lambda p: -float(p.name.split("_res-")[1].split("_")[0].replace("p", ".")),
    )
    assert found, f"no {desc} map of {label}"
    return found[0]


# for calls that test something other than the bootstrap, the comparison or the patient pages
QUICK = ["--no-compare", "--bootstrap", "10", "--no-patient-pages"]
READ = {"sep": "\t", "dtype": {"participant_id": str}, "keep_default_na": False, "na_values": ["n/a"]}


@pytest.fixture(scope="module")
def subtype_out(smoke_run):
    assert main(["--quiet", "subtype", str(smoke_run), "--k-range", "2-3"]) == 0
    return smoke_run / "subtype"


def test_subtype_writes_every_output(subtype_out):
    for name in ("embeddings.tsv", "stability.tsv", "subtypes.tsv", "demographics.tsv", "subtype_model.json",
                 "dataset_description.json",
                 "report.html", "figures/k_selection.png", "figures/salient_space.png",
                 "figures/training_curves.png"):  # fmt: skip
        assert (subtype_out / name).is_file(), name
    subtypes = pd.read_csv(subtype_out / "subtypes.tsv", **READ)
    controls = subtypes["group"] == "background"
    assert (subtypes.loc[controls, "subtype"] == "control").all()
    assert subtypes.loc[~controls, "subtype"].isin(["S1", "S2"]).all()
    assert subtypes.loc[~controls, "probability"].between(0.5, 1.0).all()  # K = 2: the argmax holds ≥ 1/2
    np.testing.assert_allclose(subtypes.loc[~controls, ["p_S1", "p_S2"]].sum(axis=1), 1.0, atol=1e-4)
    assert (subtypes["in_training"] == (subtypes["split"] == "train")).all()
    stability = pd.read_csv(subtype_out / "stability.tsv", sep="\t")
    assert stability["chosen"].sum() == 1
    embeddings = pd.read_csv(subtype_out / "embeddings.tsv", **READ)
    assert {"common_0", "salient_7"} <= set(embeddings.columns) and len(embeddings) == len(subtypes)
    demographics = pd.read_csv(subtype_out / "demographics.tsv", sep="\t")
    assert demographics["n"].sum() == len(subtypes) and "age_mean" in demographics
    report = (subtype_out / "report.html").read_text()
    assert "Recipe: <code>defaults</code>" in report and "chosen by stability above noise" in report
    assert "Research use only" in report and str(datetime.date.today()) in report


def test_maps_overlay_on_the_template(subtype_out, smoke_run):
    grid = np.array(json.loads((smoke_run / "run.json").read_text())["grid_affine"])
    maps = sorted((subtype_out / "maps").glob("subtype-S*_space-MNI152NLin2009aSym_res-6_desc-*_map.nii.gz"))
    assert len(maps) == 6  # 2 subtypes × (saliency, signed, z) on the training grid
    for path in maps:
        image = nib.load(path)
        np.testing.assert_allclose(image.affine, grid, atol=1e-5)
        assert int(image.header["sform_code"]) == 4
        assert np.isfinite(np.asarray(image.dataobj)).all()
    saliency = np.asarray(nib.load(training_map(subtype_out, "S1", "saliency")).dataobj)
    assert saliency.max() > 0 and saliency.min() >= 0


def test_region_tables_carry_the_licence(subtype_out):
    table = pd.read_csv(subtype_out / "tables" / "subtype-S1_atlas-aal_regions.tsv", sep="\t")
    assert list(table.columns) == ["rank", "region", "region_name", "label", "hemisphere", "volume_mm3",
                                   "mean_saliency", "mean_abs_saliency", "share_abs_saliency"]  # fmt: skip
    assert table["mean_abs_saliency"].is_monotonic_decreasing and len(table) > 100
    assert table["share_abs_saliency"].sum() == pytest.approx(1.0, abs=1e-6)
    sidecar = json.loads((subtype_out / "tables" / "subtype-S1_atlas-aal_regions.json").read_text())
    assert "AAL3" in sidecar["licence"]
    assert "Atlas licence: AAL3" in (subtype_out / "report.html").read_text()


def test_evaluate_scores_a_subtype_folder(subtype_out, tiny_native_cohort):
    truth = tiny_native_cohort / "derivatives" / "truth"
    assert main(["--quiet", "evaluate", str(subtype_out), "--truth", str(truth)]) == 0
    card = json.loads((subtype_out / "scorecard.json").read_text())
    assert "all" in card["subtypes"] and set(card["saliency"]) <= {"S1", "S2"} and card["saliency"]


def test_cohort_assignment_flags_training_subjects_by_id_and_by_content(
    subtype_out, smoke_run, tiny_derivatives, tmp_path
):
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_derivatives, cohort)
    table = pd.read_csv(cohort / "cohort.tsv", **READ)
    split = pd.read_csv(smoke_run / "split.tsv", **READ)
    trained = split.loc[split["split"] == "train", "participant_id"].iloc[0]
    table.loc[table["participant_id"] == trained, "participant_id"] = "sub-renamed"  # same image, new ID
    table.to_csv(cohort / "cohort.tsv", sep="\t", index=False, na_rep="n/a")
    out = tmp_path / "assigned"
    code = main(["--quiet", "subtype", str(smoke_run), "--cohort", str(cohort), "--out", str(out)])
    assert code == 0
    # the fitted model is RUN_DIR/subtype's (or --fitted DIR); --out is where the assignment goes
    assigned = pd.read_csv(out / "subtypes.tsv", **READ)
    flagged = dict(zip(assigned["participant_id"], assigned["in_training"], strict=True))
    assert flagged["sub-renamed"]
    expected = set(split.loc[split["split"] == "train", "participant_id"]) - {trained} | {"sub-renamed"}
    assert {p for p, f in flagged.items() if f} == expected
    fitted = pd.read_csv(smoke_run / "subtype" / "subtypes.tsv", **READ).set_index("participant_id")
    kept = assigned.set_index("participant_id").drop(index="sub-renamed")
    assert (kept["subtype"] == fitted.loc[kept.index, "subtype"]).all()  # predict, no refit


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--k", "1"], 64), (["--k-range", "5-2"], 64), (["--k", "many"], 64), (["--atlas", "nonexistent"], 66)],
)
def test_bad_options_exit_with_documented_codes(smoke_run, tmp_path, args, code, capsys):
    assert main(["subtype", str(smoke_run), "--out", str(tmp_path / "o"), *args]) == code
    assert capsys.readouterr().err.count("\n") == 1


def test_missing_run_and_missing_fit(tmp_path, smoke_run, capsys):
    assert main(["subtype", str(tmp_path / "nope")]) == 66
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("subtype"))
    assert main(["subtype", str(copy), "--cohort", str(copy)]) == 66
    assert "run neurosepclr subtype" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SENTINEL']}",))


def test_crafted_pickle_checkpoint_is_refused_without_running(smoke_run, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("subtype"))
    sentinel = tmp_path / "executed"
    monkeypatch.setenv("SENTINEL", str(sentinel))
    for name in ("best.pt", "last.pt"):
        (copy / "checkpoints" / name).write_bytes(pickle.dumps({"model": _Payload(), "step": 1}))
    assert main(["subtype", str(copy)]) == 65
    assert not sentinel.exists()
    assert "not a safe neurosepclr checkpoint" in capsys.readouterr().err


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return (browser, driver) if browser and driver else None


def _network_free(text: str) -> bool:
    """No resource of the page is fetched over the network (scripts, images, styles, frames)."""
    return not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", text)


def test_report_renders_in_headless_chromium(subtype_out, monkeypatch):
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium, chromium-driver and selenium (see .ci/run)")
        pytest.skip("headless Chromium (chromium, chromium-driver, selenium) not installed")
    from selenium import webdriver

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.binary_location = found[0]
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    try:
        driver.get((subtype_out / "report.html").as_uri())
        images = driver.execute_script(
            """return Array.from(document.images).map(img => {
                 const c = document.createElement('canvas');
                 c.width = img.naturalWidth; c.height = img.naturalHeight;
                 const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                 const d = g.getImageData(0, 0, c.width, c.height).data;
                 let ink = 0;
                 for (let i = 0; i < d.length; i += 4) { if (d[i] + d[i+1] + d[i+2] < 600) ink++; }
                 return [img.alt, img.complete, img.naturalWidth, ink / (d.length / 4)];
               });"""
        )
        quality = driver.execute_script(
            """return Array.from(document.querySelectorAll('#quality tr[data-status]')).map(r =>
                 [r.cells[1].innerText, r.dataset.status, getComputedStyle(r).backgroundColor]);"""
        )
        requests = [
            json.loads(entry["message"])["message"]["params"]["request"]["url"]
            for entry in driver.get_log("performance")
            if '"Network.requestWillBeSent"' in entry["message"]
        ]
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        title = driver.title
        driver.get((next((subtype_out / "patients").glob("*.html"))).as_uri())
        frequencies = driver.execute_script("return document.querySelectorAll('#frequencies tr').length")
    finally:
        driver.quit()
    assert title == "neurosepclr subtype report"
    assert errors == []
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests
    # K selection, sizes, salient space, training, 2 subtypes × saliency and effect size × (glass, slices)
    assert len(images) >= 12
    for alt, complete, width, ink in images:
        assert complete and width > 100, alt
        assert ink > 0.01, f"{alt}: figure looks blank"
    statuses = {check: (status, colour) for check, status, colour in quality}
    # the smoke run's salient space does not beat chance on its held-out subjects: red, drawn red
    assert statuses["salient space: diagnosis"][0] == "red"
    assert statuses["salient space: diagnosis"][1] == "rgb(244, 199, 195)"
    assert frequencies == 3  # header + one bar per subtype


def test_every_output_is_documented_by_a_sidecar(subtype_out):
    outputs = [
        p
        for p in subtype_out.rglob("*")
        if p.name.endswith((".tsv", ".nii.gz")) and p.name != "scorecard.tsv"  # evaluate's, in JSON beside it
    ]
    assert len(outputs) > 20
    for path in outputs:
        sidecar = path.with_name(
            path.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".tsv") + ".json"
        )
        assert sidecar.is_file(), f"{path.name}: no sidecar"
        meta = json.loads(sidecar.read_text())
        assert meta["Description"]
        if path.suffix == ".tsv":
            columns = pd.read_csv(path, sep="\t", nrows=0).columns
            assert all(meta[c]["Description"] for c in columns), path.name
        else:
            assert meta["Units"] and meta["Space"] == "MNI152NLin2009aSym"
    for path in subtype_out.rglob("*.html"):
        assert _network_free(path.read_text()), path.name


def test_subtypes_keep_the_diagnosis_and_a_bootstrap_frequency(subtype_out):
    subtypes = pd.read_csv(subtype_out / "subtypes.tsv", **READ)
    assert list(subtypes.columns[:5]) == ["participant_id", "session_id", "group", "diagnosis", "split"]
    assert set(subtypes["diagnosis"]) == {"CN", "PT"}
    patients = subtypes[subtypes["group"] == "target"]
    frequency = patients["assignment_frequency"]
    assert frequency.between(0, 1).all()
    np.testing.assert_allclose(patients[["freq_S1", "freq_S2"]].sum(axis=1), 1.0, atol=1e-5)  # 6 digits
    assert (patients["confident"] == (frequency >= 0.9)).all()
    assert (patients["nearest_other_subtype"] != patients["subtype"]).all()
    assert "0.1234567890" not in (subtype_out / "subtypes.tsv").read_text()
    mantissas = [v.lower().split("e")[0] for v in patients["distance"].astype(str)]  # 2.77556e-17 too
    assert all(len(m.replace("-", "").replace(".", "").lstrip("0")) <= 6 for m in mantissas)  # 6 digits


def test_cluster_tables_name_the_region_at_their_peak(subtype_out):
    from neurosepclr.analysis.clusters import atlas_labels_at
    from neurosepclr.atlases import full_region_name, load_atlas

    atlas = load_atlas("aal")
    tables = sorted((subtype_out / "tables").glob("subtype-*_desc-*_clusters.tsv"))
    assert len(tables) == 4  # 2 subtypes × (saliency, effect size)
    rows = pd.concat([pd.read_csv(t, sep="\t", keep_default_na=False) for t in tables])
    assert len(rows) > 0
    peaks = rows[["peak_x_mm", "peak_y_mm", "peak_z_mm"]].to_numpy(dtype=float)
    labels = atlas_labels_at(atlas, peaks)
    named = [full_region_name("aal", atlas.names[int(i)]) if i > 0 else "unlabelled" for i in labels]
    assert named == rows["aal_peak_region"].tolist()
    assert (rows["volume_mm3"].astype(float) >= 100).all()
    agreement = pd.read_csv(subtype_out / "agreement.tsv", sep="\t")
    assert set(agreement["subtype"]) == {"S1", "S2"} and agreement["shared_top_regions"].between(0, 5).all()


def test_viewer_and_patient_maps_stay_offline(smoke_run, tmp_path):
    out = tmp_path / "viewer"
    args = ["--quiet", "subtype", str(smoke_run), "--k", "2", "--viewer", "--per-subject-maps",
            "--bootstrap", "10", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    viewers = sorted((out / "viewer").glob("*.html"))
    assert len(viewers) == 4  # 2 subtypes × (effect size, saliency z)
    for path in [*viewers, *(out / "patients").glob("*.html"), out / "report.html"]:
        assert _network_free(path.read_text()), path.name
    page = next((out / "patients").glob("*.html")).read_text()
    assert "data:image/png;base64" in page  # the patient's own map, inlined
    assert json.loads((out / "subtypes.json").read_text())["assignment_frequency"]["Description"]


def test_rerun_replaces_old_subtype_files_and_refuses_an_impossible_k(smoke_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("subtype"))
    assert main(["--quiet", "subtype", str(copy), "--k", "2", *QUICK]) == 0
    stale = copy / "subtype" / "maps" / "subtype-S9_desc-saliency_map.nii.gz"
    shutil.copy(training_map(copy / "subtype", "S1", "saliency"), stale)
    assert main(["--quiet", "subtype", str(copy), "--k", "2", *QUICK]) == 0
    assert not stale.exists()
    assert main(["subtype", str(copy), "--k", "9"]) == 65
    assert "training patients are too few for it" in capsys.readouterr().err


def test_a_run_whose_derivatives_moved_is_read_from_their_new_place(
    smoke_run, tiny_derivatives, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("subtype"))
    moved = tmp_path / "moved" / "derivatives"
    shutil.copytree(tiny_derivatives, moved)
    record = json.loads((run / "run.json").read_text())
    record |= {"derivatives": str(tmp_path / "gone"), "derivatives_relative": "../gone"}
    (run / "run.json").write_text(json.dumps(record))
    assert main(["subtype", str(run), "--k", "2"]) == 66
    assert "pass their new location with --derivatives DIR" in capsys.readouterr().err
    assert main(["--quiet", "subtype", str(run), "--k", "2", *QUICK, "--derivatives", str(moved)]) == 0
    assert (run / "subtype" / "subtypes.tsv").is_file()
    image = next(moved.rglob("*_desc-preproc_T1w.nii.gz"))
    image.write_bytes(image.read_bytes() + b"\0")  # not the images the run was trained on
    assert main(["subtype", str(run), "--k", "2", "--derivatives", str(moved)]) == 65
    assert "not the ones" in capsys.readouterr().err


def test_run_folder_records_where_its_derivatives_are_relative_to_it(smoke_run, tiny_derivatives):
    record = json.loads((smoke_run / "run.json").read_text())
    assert (smoke_run / record["derivatives_relative"]).resolve() == tiny_derivatives.resolve()


def test_several_input_features_give_maps_and_tables_per_feature(tiny_derivatives, tmp_path):
    """Two channels (here the T1w listed twice, as t1 and as gm: the plumbing, not the science)."""
    derivatives = tmp_path / "deriv"
    shutil.copytree(tiny_derivatives, derivatives)
    table = pd.read_csv(derivatives / "cohort.tsv", sep="\t", dtype=str, keep_default_na=False)
    table.insert(4, "gm", table["preproc"])
    table.to_csv(derivatives / "cohort.tsv", sep="\t", index=False)
    run = tmp_path / "run"
    argv = ["--quiet", "train", str(derivatives), str(run), "--config", "pipelines/smoke.yaml"]
    assert main([*argv, "--set", "data.features=[t1, gm]"]) == 0
    assert main(["--quiet", "subtype", str(run), "--k", "2", *QUICK]) == 0
    out = run / "subtype"
    for label in ("S1", "S2"):
        assert training_map(out, label, "saliency").is_file()  # all channels
        for feature in ("t1", "gm"):
            assert training_map(out, label, "saliency", feature).is_file()
            assert (out / "tables" / f"subtype-{label}_feature-{feature}_atlas-aal_regions.tsv").is_file()
    combined = nib.load(training_map(out, "S1", "signedsaliency")).get_fdata()
    parts = [nib.load(training_map(out, "S1", "signedsaliency", f)).get_fdata() for f in ("t1", "gm")]
    np.testing.assert_allclose(combined, parts[0] + parts[1], atol=1e-5)  # the channels' shares add up
    assert "The encoders saw t1, gm" in (out / "report.html").read_text()


def test_group_maps_average_a_stated_sample_of_each_subtype(subtype_out, smoke_run, tmp_path):
    subtypes = pd.read_csv(subtype_out / "subtypes.tsv", **READ)
    full = json.loads((subtype_out / "maps" / "saliency.json").read_text())["subjects_attributed"]
    sizes = subtypes["subtype"].value_counts().to_dict()
    assert full == {"limit_per_group": 100, "controls": sizes.pop("control"), **sizes}
    out = tmp_path / "sampled"
    args = [
        "--quiet",
        "subtype",
        str(smoke_run),
        "--k",
        "2",
        "--saliency-sample",
        "1",
        *QUICK,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    sampled = json.loads((out / "maps" / "saliency.json").read_text())["subjects_attributed"]
    assert sampled == {"limit_per_group": 1, "controls": 1, "S1": 1, "S2": 1}
    for name in ("S1", "S2"):
        image = nib.load(training_map(out, name, "saliency"))
        assert np.asarray(image.dataobj).max() > 0


def test_a_memmap_run_is_analysed_from_a_memory_map_with_the_same_values(smoke_run, monkeypatch):
    from dataclasses import replace

    import neurosepclr.training.data as data_module
    from neurosepclr.training.inference import load_run

    mapped_files = []
    open_memmap = data_module._open_memmap
    monkeypatch.setattr(data_module, "_open_memmap", lambda path, shape: mapped_files.append(path) or
                        open_memmap(path, shape))  # fmt: skip
    run = load_run(smoke_run)
    in_ram = run.cohort().volumes
    assert mapped_files == []
    run.config = replace(run.config, train=replace(run.config.train, cache="memmap"))
    mapped = run.cohort().volumes
    assert mapped_files == [smoke_run / ".volumes-analysis.npy"] and not mapped_files[0].exists()
    np.testing.assert_array_equal(mapped.numpy(), in_ram.numpy())


def test_consensus_of_two_seeds_and_the_cpca_representation(smoke_run, tiny_derivatives, tmp_path, capsys):
    from tests.conftest import SMOKE_RECIPE

    second = tmp_path / "seed1"  # another seed on the smoke run's split (split seed 0)
    argv = ["--quiet", "train", str(tiny_derivatives), str(second), "--config", str(SMOKE_RECIPE)]
    assert main([*argv, "--set", "seed=1", "--set", "train.split_seed=0"]) == 0
    quick = ["--k", "2", "--bootstrap", "10", "--no-patient-pages"]
    out = tmp_path / "consensus"
    assert main(["subtype", str(smoke_run), "--consensus", str(second), *quick, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "consensus of 2 runs" in printed and "agreement with the cpca subtypes: ARI" in printed
    runs = pd.read_csv(out / "runs.tsv", sep="\t")
    assert runs["seed"].tolist() == [0, 1] and runs["ari_with_consensus"].between(-1, 1).all()
    subtypes = pd.read_csv(out / "subtypes.tsv", **READ)
    patients = subtypes["group"] == "target"
    assert subtypes.loc[patients, "subtype_cpca"].isin(["S1", "S2"]).all()
    assert (subtypes.loc[~patients, "subtype_cpca"] == "control").all()
    np.testing.assert_allclose(subtypes.loc[patients, ["freq_S1", "freq_S2"]].sum(axis=1), 1.0, atol=1e-6)
    quality = pd.read_csv(out / "quality.tsv", sep="\t").set_index("check")
    assert "mean pairwise ARI" in quality.loc["agreement across seeds", "value"]
    assert "two representations" in quality.index
    report = (out / "report.html").read_text()
    assert "Agreement across seeds" in report and "Two representations" in report
    for name in ("runs", "representations", "cpca_alpha", "embeddings"):
        assert json.loads((out / f"{name}.json").read_text())
    assert "cpca_0" in pd.read_csv(out / "embeddings.tsv", sep="\t", nrows=0).columns

    other_split = tmp_path / "other-split"  # the same run, its split changed: not the same held-out set
    shutil.copytree(second, other_split)
    split = pd.read_csv(other_split / "split.tsv", **READ)
    split.loc[split.index[:2], "split"] = split.loc[split.index[:2], "split"].to_numpy()[::-1]
    assert split["split"].iloc[0] != split["split"].iloc[1]
    split.to_csv(other_split / "split.tsv", sep="\t", index=False, na_rep="n/a")
    code = main(
        ["subtype", str(smoke_run), "--consensus", str(other_split), *quick, "--out", str(tmp_path / "x")]
    )
    assert code == 65 and "split.tsv differs" in capsys.readouterr().err

    linear = tmp_path / "cpca"
    assert (
        main(["--quiet", "subtype", str(smoke_run), "--representation", "cpca", *quick, "--out", str(linear)])
        == 0
    )
    fitted = json.loads((linear / "subtype_model.json").read_text())
    assert fitted["representation"] == "cpca" and (linear / fitted["encoder"]).is_file()
    assert pd.read_csv(linear / "cpca_alpha.tsv", sep="\t")["chosen"].sum() == 1
    reported = pd.read_csv(linear / "subtypes.tsv", **READ).set_index("participant_id")
    assert reported.loc[reported["group"] == "target", "subtype_sepclr"].isin(["S1", "S2"]).all()
    assert training_map(linear, "S1", "saliency").is_file()
    assigned_dir = tmp_path / "assigned"
    argv = ["--quiet", "subtype", str(smoke_run), "--cohort", str(tiny_derivatives), "--fitted", str(linear)]
    assert main([*argv, "--out", str(assigned_dir)]) == 0
    assigned = pd.read_csv(assigned_dir / "subtypes.tsv", **READ).set_index("participant_id")
    assert (assigned["subtype"] == reported.loc[assigned.index, "subtype"]).all()  # the same encoder
