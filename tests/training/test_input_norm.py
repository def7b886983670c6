"""train.input_norm=controls: z-scores against the training controls, stored and reused by subtype."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neurosepclr.cli import main
from neurosepclr.errors import InputDataError
from neurosepclr.training.checkpoint import load_checkpoint
from neurosepclr.training.data import (
    control_reference,
    load_derivatives,
    normalise_in_place,
    normalise_to_reference,
    site_control_reference,
    site_indices,
)
from neurosepclr.training.inference import load_run

SMOKE = str(Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml")


def test_control_reference_gives_controls_zero_mean_unit_spread():
    torch.manual_seed(0)
    volumes = torch.randn(12, 1, 4, 5, 6) * 3.0 + 7.0
    volumes[:, :, 0] = 2.0  # a constant slab (background): no division by zero
    controls = torch.arange(12) < 8
    mean, spread = control_reference(volumes, controls)
    z = normalise_to_reference(volumes, mean, spread)
    torch.testing.assert_close(z[controls].mean(dim=0), torch.zeros(1, 4, 5, 6), atol=1e-5, rtol=0)
    assert torch.isfinite(z).all() and (z[:, :, 0] == 0).all()
    inside = z[controls][:, :, 1:]
    assert abs(float(inside.std(dim=0).mean()) - 1.0) < 1e-3


def test_reference_is_saved_and_used_by_subtype(tiny_derivatives, tmp_path):
    run = tmp_path / "run"
    argv = ["--quiet", "train", str(tiny_derivatives), str(run), "--config", SMOKE]
    assert main([*argv, "--set", "train.input_norm=controls", "--set", "train.steps=2"]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    trained = load_run(run, "last")
    assert state["input_mean"].shape == (1, 1, *trained.grid_shape)
    data = trained.cohort()
    split = trained.split.set_index("participant_id").loc[data.table["participant_id"], "split"].to_numpy()
    controls = torch.from_numpy(split == "train") & ~data.is_target
    assert float(data.volumes[controls].mean(dim=0).abs().max()) < 1e-4  # normalised as in training


def test_memory_mapped_cohort_holds_the_same_values_and_leaves_no_file(tiny_derivatives, tmp_path):
    in_ram = load_derivatives(tiny_derivatives, 2)
    mapped = load_derivatives(tiny_derivatives, 2, memmap=tmp_path / "cache" / "volumes.npy")
    assert mapped.volumes.shape == in_ram.volumes.shape
    assert torch.equal(mapped.volumes, in_ram.volumes)
    assert not list(tmp_path.rglob("*.npy"))  # unlinked once mapped: the space returns at exit
    controls = ~in_ram.is_target
    mean, spread = control_reference(mapped.volumes, controls)
    expected = normalise_to_reference(in_ram.volumes, mean, spread)
    assert normalise_in_place(mapped.volumes, mean, spread) is mapped.volumes
    assert torch.equal(mapped.volumes, expected)


def test_memmap_cache_trains_to_the_same_weights_as_ram(tiny_derivatives, tmp_path, monkeypatch):
    import neurosepclr.training.data as data_module

    mapped_files = []
    open_memmap = data_module._open_memmap
    monkeypatch.setattr(data_module, "_open_memmap", lambda path, shape: mapped_files.append(path) or
                        open_memmap(path, shape))  # fmt: skip
    weights = {}
    local = tmp_path / "node-local"
    for cache in ("ram", "memmap"):
        run = tmp_path / cache
        argv = ["--quiet", "train", str(tiny_derivatives), str(run), "--config", SMOKE]
        argv += ["--set", "train.input_norm=controls", "--set", f"train.cache={cache}"]
        assert main([*argv, "--set", f"train.cache_dir={local}"]) == 0
        weights[cache] = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
        assert not list(run.rglob("*.npy")) and not list(local.glob("*.npy"))
    assert mapped_files == [local / ".volumes-rank0.npy"]  # the memmap run's cache, in cache_dir
    for key, value in weights["ram"].items():
        torch.testing.assert_close(weights["memmap"][key], value, rtol=0, atol=0, msg=key)


def test_site_control_reference_removes_each_sites_offset_with_a_pooled_spread():
    torch.manual_seed(0)
    sites = pd.Series(["b", "a", "b", "a"] * 5)
    offsets = torch.tensor([5.0 if site == "b" else -5.0 for site in sites]).view(-1, 1, 1, 1, 1)
    volumes = torch.randn(20, 1, 3, 4, 5) + offsets
    controls = torch.arange(20) < 12
    mean, spread, names = site_control_reference(volumes, controls, sites)
    assert names == ["a", "b"] and mean.shape == (2, 1, 3, 4, 5) and spread.shape == (1, 1, 3, 4, 5)
    frame = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(20)], "site": sites})
    z = normalise_in_place(volumes.clone(), mean, spread, site_indices(frame, names))
    for site in ("a", "b"):  # each site's controls centred on their own mean
        rows = controls & torch.tensor((sites == site).to_numpy())
        torch.testing.assert_close(z[rows].mean(dim=0), torch.zeros(1, 3, 4, 5), atol=1e-5, rtol=0)
    assert float(z.abs().mean()) < 1.5  # the ±5 site offsets are gone (plain control z-scores keep them)
    pooled = np.sqrt(
        sum(
            float(((volumes[controls & torch.tensor((sites == s).to_numpy())] - mean[k]) ** 2).sum())
            for k, s in enumerate(names)
        )
        / ((12 - 2) * 60)
    )
    assert abs(float(spread.pow(2).mean().sqrt()) - pooled) < 1e-4


def test_site_norm_refuses_a_site_without_controls_and_names_the_subject():
    volumes = torch.randn(6, 1, 2, 2, 2)
    with pytest.raises(InputDataError, match="site 'c' has 1 training controls"):
        site_control_reference(volumes, torch.ones(6, dtype=torch.bool), pd.Series(list("aabbbc")))
    frame = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "site": ["a", "z"]})
    with pytest.raises(InputDataError, match="sub-02: site 'z' has no training controls"):
        site_indices(frame, ["a", "b"])
