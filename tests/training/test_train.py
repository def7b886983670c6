"""neurosepclr train on the tiny cohort: run folder, metrics, checkpoints, exact resume, refusals."""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import neurosepclr.compute as compute
import neurosepclr.training.loop as loop
from neurosepclr.cli import main
from neurosepclr.config import load_config
from neurosepclr.errors import ConfigError, InputDataError
from neurosepclr.models import build_model
from neurosepclr.training.checkpoint import load_checkpoint
from neurosepclr.training.loop import train

SMOKE = Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml"


def smoke(*overrides):
    return load_config(SMOKE, list(overrides))


def test_run_folder_describes_itself(smoke_run):
    for name in (
        "config.yaml",
        "run.json",
        "manifest.tsv",
        "split.tsv",
        "metrics.jsonl",
        "embeddings.tsv",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (smoke_run / name).is_file(), name
    assert list((smoke_run / "logs").glob("train_*.log"))
    run = json.loads((smoke_run / "run.json").read_text())
    assert run["seed"] == 0 and run["versions"]["torch"] == torch.__version__
    manifest = pd.read_csv(smoke_run / "manifest.tsv", sep="\t")
    assert len(manifest) == 10 and manifest["sha256"].str.len().eq(64).all()
    split = pd.read_csv(smoke_run / "split.tsv", sep="\t")
    assert not split["participant_id"].duplicated().any()  # no subject on both sides
    assert set(split.groupby("split")["group"].unique().explode()) == {"background", "target"}
    assert set(split.loc[split["split"] == "val", "group"]) == {"background", "target"}


def test_metrics_log_every_term_and_the_probes(smoke_run):
    lines = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))
    for key in (
        "loss/total",
        "loss/common",
        "loss/salient",
        "loss/background",
        "loss/jem",
        "lr",
        "grad_norm",
    ):
        assert all(key in line for line in lines), key
    evaluated = [line for line in lines if "val/salient/diagnosis_bacc" in line]
    assert [line["step"] for line in evaluated] == [3, 6]
    assert "val/common/age_r2" in evaluated[-1] and "val/salient/diagnosis_bacc" in evaluated[-1]


def test_embeddings_hold_both_spaces_before_the_heads(smoke_run):
    frame = pd.read_csv(smoke_run / "embeddings.tsv", sep="\t")
    assert [c for c in frame.columns if c.startswith("common_")] == [f"common_{k}" for k in range(8)]
    assert [c for c in frame.columns if c.startswith("salient_")] == [f"salient_{k}" for k in range(8)]
    assert set(frame["split"]) == {"train", "val"}


def test_checkpoints_are_state_dicts_loaded_with_weights_only(smoke_run):
    state = load_checkpoint(smoke_run / "checkpoints" / "last.pt")
    assert state["step"] == 6 and isinstance(state["model"], dict)
    assert set(state) >= {"optimizer", "scheduler", "scaler", "torch_rng", "config_sha256", "inputs_sha256"}


def _weights(run):
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_interrupted_then_resumed_run_ends_with_the_same_weights(
    tmp_path, tiny_derivatives, monkeypatch, smoke_run
):
    cfg = smoke()
    reference = _weights(smoke_run)
    original = loop.draw_view_params
    calls = {"n": 0}

    def crash_at_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # two draws per step: the first draw of step 5
            raise KeyboardInterrupt  # as if killed after the step-4 checkpoint
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "draw_view_params", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_derivatives, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4
    monkeypatch.setattr(loop, "draw_view_params", original)
    train(cfg, tiny_derivatives, tmp_path / "run", resume=True, progress=False)
    resumed = _weights(tmp_path / "run")
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_ema_weights_are_checkpointed_analysed_and_resumed_exactly(tmp_path, tiny_derivatives, monkeypatch):
    cfg = smoke("train.ema_decay=0.5")
    train(cfg, tiny_derivatives, tmp_path / "reference", progress=False)
    reference = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")
    assert any(
        not torch.equal(reference["model"][key], reference["training_model"][key])
        for key in reference["model"]
        if reference["model"][key].is_floating_point()
    )  # the average is not the last step's weights
    original, calls = loop.draw_view_params, {"n": 0}

    def crash_at_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "draw_view_params", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_derivatives, tmp_path / "run", progress=False)
    monkeypatch.setattr(loop, "draw_view_params", original)
    train(cfg, tiny_derivatives, tmp_path / "run", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for part in ("model", "training_model"):
        for key in reference[part]:
            torch.testing.assert_close(resumed[part][key], reference[part][key], rtol=0, atol=0, msg=key)
    from neurosepclr.compute import representations
    from neurosepclr.training.inference import load_run

    run = load_run(tmp_path / "reference", "last")  # what subtype analyses: the averaged weights
    _, salient = representations(run.model, run.cohort().volumes, torch.device("cpu"))
    embeddings = pd.read_csv(tmp_path / "reference" / "embeddings.tsv", sep="\t")
    np.testing.assert_allclose(embeddings.filter(like="salient_").to_numpy(), salient, rtol=1e-3, atol=1e-3)


def test_resume_refuses_a_changed_config_and_an_existing_run(smoke_run, tiny_derivatives, capsys):
    with pytest.raises(
        ConfigError,
        match=r"--resume refused: config changed since the checkpoint \(checkpoint \w{12}, now \w{12}\)",
    ):
        train(smoke("loss.beta_reg=100"), tiny_derivatives, smoke_run, resume=True, progress=False)
    assert main(["--quiet", "train", str(tiny_derivatives), str(smoke_run), "--config", str(SMOKE)]) == 73
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_crafted_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    path = tmp_path / "last.pt"
    with path.open("wb") as handle:
        pickle.dump({"model": Payload(), "step": 1}, handle)
    with pytest.raises(InputDataError, match="not a safe neurosepclr checkpoint, refused"):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_divergence_stops_with_a_diagnostic_and_keeps_the_last_checkpoint(
    tmp_path, tiny_derivatives, monkeypatch
):
    original = loop.loss_from_config

    def poisoned(cfg):
        loss = original(cfg)
        real_forward = loss.forward
        counter = {"n": 0}

        def forward(*args, **kwargs):
            counter["n"] += 1
            terms = real_forward(*args, **kwargs)
            return terms._replace(total=terms.total * float("nan")) if counter["n"] == 3 else terms

        loss.forward = forward
        return loss

    monkeypatch.setattr(loop, "loss_from_config", poisoned)
    with pytest.raises(loop.TrainingDiverged, match=r"step 2: loss is not finite \(total=nan"):
        train(smoke(), tiny_derivatives, tmp_path / "run", progress=False)
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert kept["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2]  # no record of the poisoned step


def test_split_seed_fixes_the_split_and_clusters_selects_the_most_structured_evaluation(
    tmp_path, tiny_derivatives, smoke_run
):
    run = tmp_path / "run"
    train(
        smoke("seed=1", "train.split_seed=0", "train.select=clusters", "subtype.k=2"),
        tiny_derivatives,
        run,
        progress=False,
    )
    split = pd.read_csv(run / "split.tsv", sep="\t")
    assert split.equals(pd.read_csv(smoke_run / "split.tsv", sep="\t"))  # seed 1, the split of seed 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if "train/salient/cluster_score" in line]
    assert [line["step"] for line in evaluated] == [3, 6]
    assert all(line["train/salient/cluster_k"] == 2 for line in evaluated)
    assert all("train/common/diagnosis_cv" in line for line in evaluated)
    # the structure score less the common space's diagnosis accuracy above chance
    score = {line["step"]: loop.selection_score(line, "clusters") for line in evaluated}
    assert all(score[line["step"]] <= line["train/salient/cluster_score"] + 1e-9 for line in evaluated)
    best_step = load_checkpoint(run / "checkpoints" / "best.pt")["step"]
    # each score is two logged values, each rounded to 4 decimals: up to 1e-4 off, 2e-4 between two
    assert score[best_step] >= max(score.values()) - 2e-4


def test_single_space_simclr_baseline_trains_only_the_common_encoder(tmp_path, tiny_derivatives):
    single_space = ["loss.common=nt_xent", "loss.beta_s=0", "loss.beta_reg=0", "loss.lambda_jem=0"]
    weights = {}
    for steps in (2, 6):
        train(
            smoke(*single_space, f"train.steps={steps}"),
            tiny_derivatives,
            tmp_path / str(steps),
            progress=False,
        )
        weights[steps] = _weights(tmp_path / str(steps))
    parameters = {name for name, _ in build_model(smoke().model).named_parameters()}
    salient = [k for k in parameters if k.startswith(("salient_encoder.", "salient_head."))]
    common = [k for k in parameters if k.startswith(("common_encoder.", "common_head."))]
    assert salient and common
    for key in salient:  # no gradient reaches the salient side: its weights never move
        torch.testing.assert_close(weights[6][key], weights[2][key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(weights[6][key], weights[2][key]) for key in common)
    logged = [json.loads(line) for line in (tmp_path / "6" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["loss/total"] == pytest.approx(line["loss/common"], abs=1e-6) for line in logged)


def test_common_matching_term_is_trained_and_logged(tmp_path, tiny_derivatives, smoke_run):
    """loss.lambda_match > 0 adds the MMD of controls' and patients' common features to the total."""
    train(smoke("loss.lambda_match=5", "train.steps=2"), tiny_derivatives, tmp_path / "run", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["loss/common_match"] > 0 for line in logged)
    weights = smoke().loss
    for line in logged:
        total = (
            line["loss/common"]
            + weights.beta_s * line["loss/salient"]
            + weights.beta_reg * line["loss/background"]
            + weights.lambda_jem * line["loss/jem"]
            + 5 * line["loss/common_match"]
        )
        assert line["loss/total"] == pytest.approx(total, rel=1e-4, abs=1e-4)
    off = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    assert all(line["loss/common_match"] == 0 for line in off)


def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compute.resolve_precision(p, cpu) for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    monkeypatch.setattr(compute, "native_cpu_bf16", lambda: True)
    assert (compute.resolve_precision("auto", cpu), compute.resolve_precision("auto", cuda)) == (
        "bf16",
        "fp32",
    )
    monkeypatch.setattr(compute, "native_cpu_bf16", lambda: False)
    assert compute.resolve_precision("auto", cpu) == "fp32"


def test_bf16_channels_last_training_records_its_precision(tmp_path, tiny_derivatives, monkeypatch):
    monkeypatch.setattr(compute, "native_cpu_bf16", lambda: True)  # autocast bf16 runs on any CPU
    run = tmp_path / "run"
    train(
        smoke("train.precision=auto", "train.channels_last=true", "train.steps=3"),
        tiny_derivatives,
        run,
        progress=False,
    )
    assert json.loads((run / "run.json").read_text())["precision"] == "bf16"
    assert all(torch.isfinite(t).all() for t in _weights(run).values() if t.is_floating_point())
    embeddings = pd.read_csv(run / "embeddings.tsv", sep="\t")
    assert np.isfinite(embeddings.filter(regex="^(common|salient)_").to_numpy()).all()
