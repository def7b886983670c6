"""Shared fixtures: tiny simulated cohorts (built once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurosepclr.config import load_config
from neurosepclr.data.simulate import simulate

TINY = [
    "simulate.n_controls=4",
    "simulate.n_patients_per_subtype=[2]",
    "simulate.resolution=3",
]


def tiny_config(*extra: str, seed: int = 7):
    return load_config(None, [f"seed={seed}", *TINY, *extra])


@pytest.fixture(scope="session")
def tiny_native_cohort(tmp_path_factory):
    """10 subjects (4 controls, 3 subtypes × 2), scanner geometry, 3 mm."""
    return simulate(tiny_config(), tmp_path_factory.mktemp("native") / "bids", progress=False)


# template grid, one site, no noise, bias or individual deformation: the salient signal alone
CLEAN_MNI = (
    "simulate.geometry=mni",
    "simulate.noise=0",
    "simulate.deformation_mm=0",
    "simulate.n_sites=1",
    "simulate.bias_field=0",
)


@pytest.fixture(scope="session")
def tiny_mni_cohort(tmp_path_factory):
    """Same design on the template grid, one site, no noise or deformation: salient signal visible."""
    cfg = tiny_config(*CLEAN_MNI)
    return simulate(cfg, tmp_path_factory.mktemp("mni") / "bids", progress=False)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_derivatives(tmp_path_factory, tiny_native_cohort):
    """The tiny native cohort preprocessed at 3 mm (all 10 subjects)."""
    from neurosepclr.cli import main

    out = tmp_path_factory.mktemp("derivatives") / "deriv"
    assert (
        main(
            ["--quiet", "preprocess", str(tiny_native_cohort), str(out), "--resolution", "3", "--n-jobs", "2"]
        )
        == 0
    )
    return out


SMOKE_RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "smoke.yaml"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, tiny_derivatives, tiny_native_cohort):
    """A run folder of ``pipelines/smoke.yaml`` on the tiny cohort (6 steps), trained once per session."""
    from neurosepclr.cli import main

    run = tmp_path_factory.mktemp("run") / "run"
    truth = tiny_native_cohort / "derivatives" / "truth"
    argv = ["--quiet", "train", str(tiny_derivatives), str(run), "--config", str(SMOKE_RECIPE)]
    assert main([*argv, "--set", f"train.truth={truth}"]) == 0
    return run
