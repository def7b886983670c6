"""The recipes users copy carry the benchmarked settings: every key a benchmark varied (a key of a
``benchmarks/sweeps/*.yaml`` variant, or one the benchmarked recipe sets) must hold the value of the
benchmarked recipe, unless listed in ``ALLOWED_DIFFERENCES`` with its reason."""

from pathlib import Path

import pytest
import yaml

from neurosepclr.config import Config, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKED_RECIPE = ROOT / "pipelines" / "subtypes-cpu.yaml"
# benchmarks/README.md, "Which input on a volume-loss cohort": the row the user recipes follow
BENCHMARKED_ROW = (ROOT / "benchmarks" / "sweeps" / "inputs.yaml", "gm_modulated")
USER_RECIPES = ("my-cohort.yaml", "hospital-gpu.yaml")
NOT_BENCHMARK_SETTINGS = ("seed", "simulate", "pipeline")  # the cohort and the work folder, not the method
# (recipe, key): why it may differ
ALLOWED_DIFFERENCES: dict[tuple[str, str], str] = {
    (recipe, "preprocess.brain_extraction"): "hospital T1w are whole heads; the benchmark's are brain-only"
    for recipe in USER_RECIPES
}


def _dotted_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in tree.items():
        key = f"{prefix}{name}"
        keys |= _dotted_keys(value, f"{key}.") if isinstance(value, dict) else {key}
    return keys


def varied_keys() -> set[str]:
    keys = set()
    for sweep in sorted((ROOT / "benchmarks" / "sweeps").glob("*.yaml")):
        for overrides in yaml.safe_load(sweep.read_text()).values():
            keys |= {".".join(parse_override(text)[0]) for text in overrides}
    recipe = yaml.safe_load(BENCHMARKED_RECIPE.read_text())
    keys |= _dotted_keys({k: v for k, v in recipe.items() if k not in NOT_BENCHMARK_SETTINGS})
    return keys


def _value(config: Config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def benchmarked_config() -> Config:
    sweep, row = BENCHMARKED_ROW
    return load_config(BENCHMARKED_RECIPE, overrides=yaml.safe_load(sweep.read_text())[row])


def recipe_differences(recipe: str, config: Config) -> dict[str, tuple]:
    reference = benchmarked_config()
    return {
        key: (_value(config, key), _value(reference, key))
        for key in sorted(varied_keys())
        if _value(config, key) != _value(reference, key) and (recipe, key) not in ALLOWED_DIFFERENCES
    }


def test_the_benchmarks_varied_the_settings_that_made_subtypes_emerge():
    recipe_keys = {"train.input_norm", "model.pool_cells", "model.widths", "train.steps", "data.features"}
    assert recipe_keys <= varied_keys()


@pytest.mark.parametrize("recipe", USER_RECIPES)
def test_user_recipe_keeps_every_benchmarked_setting(recipe):
    assert recipe_differences(recipe, load_config(ROOT / "pipelines" / recipe)) == {}


def test_a_recipe_that_strays_from_the_benchmark_is_caught():
    overrides = ["train.input_norm=none", "train.steps=1000"]
    strayed = load_config(ROOT / "pipelines" / "my-cohort.yaml", overrides=overrides)
    assert recipe_differences("my-cohort.yaml", strayed) == {
        "train.input_norm": ("none", "controls"),
        "train.steps": (1000, 150),
    }
