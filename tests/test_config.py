"""Configuration: defaults ← YAML ← --set, strict validation, safe YAML, round trip."""

from pathlib import Path

import pytest
import yaml

from neurosepclr.config import Config, describe_fields, dump_config, load_config, parse_override
from neurosepclr.errors import ConfigError, MissingInputError, UsageError

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_then_file_then_overrides(tmp_path):
    path = write(tmp_path, "seed: 3\nloss:\n  beta_reg: 100\n  tau: 0.2\n")
    cfg = load_config(path, ["loss.tau=0.7", "loss.common=decoupled"])
    assert (cfg.seed, cfg.loss.beta_reg, cfg.loss.tau, cfg.loss.common) == (3, 100.0, 0.7, "decoupled")
    assert cfg.loss.beta_s == 1.0  # untouched default
    assert isinstance(cfg.loss.beta_reg, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.tauu=1"], "loss.tauu: unknown key"),
        (["losss.tau=1"], "losss: unknown key"),
        (["loss.tau=abc"], "loss.tau: expected a number, got str 'abc'"),
        (["loss.tau=0"], "loss.tau: must be > 0"),
        (["loss.beta_reg=-1"], "loss.beta_reg: must be >= 0"),
        (["seed=1.5"], "seed: expected an integer"),
        (["seed=true"], "seed: expected an integer"),
        (
            ["loss.common=vicreg"],
            "loss.common: must be one of infomax, nt_xent, y_aware, conditional, decoupled",
        ),
        (["loss.metadata={age: 1}"], "loss.metadata: expected a list"),
        (["loss.metadata=[age]"], "loss.metadata_sigma: needs one bandwidth per metadata column"),
        (["loss.common=y_aware"], "loss.metadata: common objective 'y_aware' needs"),
        (["loss.metadata=[age]", "loss.metadata_sigma=[-1]"], r"loss.metadata_sigma\[0\]: must be > 0"),
        (["loss.tau=.inf"], "loss.tau: must be finite"),
        (
            ["subtype.standardise=patients", "subtype.directions=true"],
            "subtype.directions: true needs subtype.standardise: controls",
        ),
        (["loss=3"], "loss: expected a mapping"),
        (["loss.tau.x=3"], "loss.tau: expected a number, got dict"),
        (["seed.x=3"], "seed: expected an integer, got dict"),
        (["seed=1", "seed.x=3"], "seed is not a section"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: !!python/object/apply:os.system ['touch pwned']\n", "line 1, column 7: not valid YAML"),
        ("a: &x [1, 2]\nb: *x\n", "aliases"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("loss: {tau: [unclosed\n", "line 2, column 1: not valid YAML"),
    ],
)
def test_unsafe_or_malformed_yaml_is_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
    assert not (tmp_path / "pwned").exists()


def test_a_bad_value_in_a_file_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "seed: 1\ntrain:\n  lr: 1.0e-3\n  steps: ten\n")
    with pytest.raises(ConfigError, match=r"c.yaml, line 4: train.steps: expected an integer"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^train.steps: expected an integer"):  # --set: no file line
        load_config(path, ["train.steps=ten"])


def test_unknown_keys_suggest_the_key_meant():
    with pytest.raises(ConfigError, match=r"data.targt: unknown key \(did you mean data.target\?\)"):
        load_config(None, ["data.targt=[AD]"])
    with pytest.raises(ConfigError, match=r"train.tau: unknown key \(did you mean loss.tau\?\)"):
        load_config(None, ["train.tau=0.1"])


def test_a_set_without_value_is_a_usage_error():
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        load_config(None, ["novalue"])


def test_list_keys_take_one_value_or_a_comma_separated_string(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  background: CN\n"), ["data.target=AD,MCI"])
    assert cfg.data.background == ["CN"] and cfg.data.target == ["AD", "MCI"]
    assert load_config(None, ["simulate.severity=0.1, 0.3"]).simulate.severity == [0.1, 0.3]
    assert load_config(None, ["loss.metadata=age", "loss.metadata_sigma=5"]).loss.metadata_sigma == [5.0]


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    with pytest.raises(ConfigError, match="aliases"):
        load_config(write(tmp_path, "\n".join(lines)))


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(MissingInputError):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "latin.yaml"
    path.write_bytes("seed: 1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_dump_round_trips(tmp_path):
    cfg = load_config(
        None, ["loss.common=conditional", "loss.metadata=[age, site]", "loss.metadata_sigma=[5, 0.001]"]
    )
    text = dump_config(cfg)
    assert yaml.safe_load(text)["loss"]["metadata"] == ["age", "site"]
    assert load_config(write(tmp_path, text)) == cfg


def test_override_values_are_yaml_scalars():
    assert parse_override("loss.metadata=[age, sex]") == (["loss", "metadata"], ["age", "sex"])
    assert parse_override("loss.tau=1e-1") == (["loss", "tau"], 0.1)
    assert parse_override("loss.tau=3E+2") == (["loss", "tau"], 300.0)
    assert parse_override("loss.common=y_aware") == (["loss", "common"], "y_aware")
    assert parse_override("a.b=") == (["a", "b"], "")


def test_describe_fields_covers_every_leaf_with_help():
    rows = describe_fields()
    keys = [r[0] for r in rows]
    assert "loss.beta_reg" in keys and "seed" in keys
    assert all(r[3] for r in rows)


@pytest.mark.parametrize("recipe", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_recipe_resolves(recipe):
    load_config(recipe)


def test_paper_recipe_holds_the_papers_medical_settings():
    cfg = load_config(PIPELINES / "sepclr-paper-medical.yaml")
    assert (cfg.loss.beta_s, cfg.loss.beta_reg, cfg.loss.lambda_jem, cfg.loss.tau) == (1.0, 10.0, 10.0, 0.5)
