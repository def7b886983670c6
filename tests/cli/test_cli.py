"""Command line: help, version, exit codes, one-line errors."""

import subprocess
import sys

import pytest
import yaml

from neurosepclr.cli import main

SUBCOMMANDS = ["simulate", "preprocess", "train", "subtype", "run"]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name}" in out


def test_version(capsys):
    from neurosepclr import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"neurosepclr {__version__}"


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from neurosepclr.cli import main; main(['--help']);"
        "heavy = [m for m in ('torch', 'monai', 'nilearn', 'ants', 'sklearn') if m in sys.modules];"
        "print('HEAVY=' + ','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="


def test_usage_errors_exit_64_with_one_line(capsys):
    assert main(["frobnicate"]) == 64
    err = capsys.readouterr().err.strip()
    assert err.startswith("neurosepclr: error:") and "invalid choice" in err and "\n" not in err
    assert main([]) == 64


def test_subtype_directions_follow_the_standardisation_and_are_refused_with_patients(tmp_path, capsys):
    assert main(["subtype", str(tmp_path), "--standardise", "patients", "--directions"]) == 64
    err = capsys.readouterr().err
    assert "--directions: true needs subtype.standardise: controls" in err and err.count("\n") == 1
    # without --directions, patients turns directions off and the command goes on to the run folder
    assert main(["subtype", str(tmp_path), "--standardise", "patients"]) == 66
    assert "not a run folder" in capsys.readouterr().err


def test_config_errors_exit_78_without_traceback(capsys):
    assert main(["config", "--set", "loss.bogus=1"]) == 78
    err = capsys.readouterr().err
    assert err.startswith("neurosepclr: error: loss.bogus: unknown key (known keys here: attribute_sigma2, ")
    assert err.endswith("tau, y_aware_tau)\n") and err.count("\n") == 1


def test_explain_lists_the_keys_to_edit_first_with_their_choices(capsys):
    from neurosepclr.config import USER_KEYS, describe_fields

    assert main(["config", "--explain"]) == 0
    out = capsys.readouterr().out.splitlines()
    advanced = out.index("Advanced keys (benchmarked defaults; change them to study the method):")
    assert out[0] == "Keys to set for your own cohort:" and advanced == len(USER_KEYS) + 1
    assert [line.split()[0] for line in out[1:advanced]] == list(USER_KEYS)
    assert len(out) == len(describe_fields()) + 2  # every key once
    assert any("preprocess.registration (one of affine | rigid | syn | none" in line for line in out)
    assert any("data.features (list of t1 | gm | gm_modulated | logjacobian" in line for line in out)


def test_debug_shows_the_traceback(capsys):
    assert main(["config", "--debug", "--set", "loss.tau=-1"]) == 78
    assert "Traceback" in capsys.readouterr().err


def test_missing_config_file_exits_66(tmp_path, capsys):
    assert main(["config", "--config", str(tmp_path / "none.yaml")]) == 66
    assert "config file not found" in capsys.readouterr().err


def test_config_dump_to_file_round_trips(tmp_path):
    out = tmp_path / "sub" / "resolved.yaml"
    assert main(["config", "--set", "loss.beta_reg=100", "--output", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["loss"]["beta_reg"] == 100.0
    assert [p.name for p in out.parent.iterdir()] == ["resolved.yaml"]  # no temp file left


def test_missing_positional_arguments_exit_64(capsys):
    assert main(["preprocess"]) == 64
    assert "the following arguments are required: BIDS_DIR, OUT_DIR" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "neurosepclr", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("neurosepclr ")


POSITIONALS = {
    "simulate": ["out"],
    "preprocess": ["bids", "out"],
    "train": ["derivatives", "run"],
    "subtype": ["run"],
    "evaluate": ["run", "--truth", "truth"],
    "run": [],
    "config": [],
}


@pytest.mark.parametrize("command", sorted(POSITIONALS))
def test_every_command_reads_config_and_set_alike(command, tmp_path, capsys):
    from neurosepclr.cli import COMMANDS

    assert set(POSITIONALS) == set(COMMANDS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 3\n")
    paths = [str(tmp_path / p) if not p.startswith("-") else p for p in POSITIONALS[command]]
    # the config is resolved before anything else is read: a bad key in --set or in the file is
    # refused (exit 78) by every command, naming the key
    assert main([command, *paths, "--config", str(recipe), "--set", "bogus.key=1"]) == 78
    assert "bogus: unknown key" in capsys.readouterr().err
    recipe.write_text("seed: 3\nloss:\n  tau: -1\n")
    assert main([command, *paths, "--config", str(recipe)]) == 78
    assert "loss.tau: must be > 0" in capsys.readouterr().err


def test_flags_are_described_by_their_config_keys(capsys):
    from neurosepclr.config import SubtypeConfig

    assert main(["subtype", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(config subtype.null_draws; default 5)" in text
    assert SubtypeConfig.__dataclass_fields__["null_draws"].metadata["help"].split(";")[0] in text


def test_list_flags_take_one_token_unless_they_take_several():
    from neurosepclr.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["subtype", "--k-range", "2-6", "RUN"])  # the run folder is not swallowed
    assert str(args.run_dir) == "RUN" and args.flag_k_range == "2-6"
    args = parser.parse_args(["subtype", "RUN", "--atlas", "aal", "aicha"])
    assert args.flag_atlas == ["aal", "aicha"]
    args = parser.parse_args(["preprocess", "B", "O", "--features", "t1", "gm", "--background", "CN,MCI"])
    assert args.flag_features == ["t1", "gm"] and args.flag_background == "CN,MCI"
