"""Command line: ``neurosepclr {simulate,preprocess,train,subtype,evaluate,run,config}``.

Heavy libraries (torch, MONAI, nilearn, ANTs) are imported inside the commands so that ``--help``
and ``--version`` stay fast. Every failure a user can act on is printed as one line
``neurosepclr: error: …`` with the sysexits code of :class:`neurosepclr.errors.ExitCode`; a
traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, get_args, get_origin

from neurosepclr import __version__
from neurosepclr.errors import ExitCode, MissingInputError, NeurosepclrError, UsageError

log = logging.getLogger("neurosepclr")


class _Parser(argparse.ArgumentParser):
    """argparse parser whose usage errors raise :class:`UsageError` (exit 64, not argparse's 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = "" if self.prog == "neurosepclr" else f"{self.prog}: "
        raise UsageError(f"{where}{message} (see {self.prog} --help)")


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("general options")
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show full tracebacks and debug messages",
    )
    group.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="only warnings and errors; no progress bars",
    )


# --------------------------------------------------------------------------- flags from the config
# Every flag that sets a config key is declared on the key's own dataclass field (``flag``,
# ``commands``), with its type, default, bounds, choices and help: the config is their single source.


def _dest(flag: str) -> str:
    return "flag_" + flag.lstrip("-").replace("-", "_")


def _add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per config key that declares this command, described by the key's own field."""
    from neurosepclr.config import cli_flags, config_field

    for flag, key in cli_flags(command):
        field, annotation = config_field(key)
        spec = field.metadata
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        shown = "|".join(spec["aliases"]) + " or " if spec.get("aliases") else ""
        default = "unset" if default is None else default
        text = f"{spec['help']} (config {key}; default {shown}{default})"
        options: dict = {"dest": _dest(flag), "default": None, "help": text.replace("%", "%%")}
        if annotation is bool or annotation == (bool | None):
            options["action"] = argparse.BooleanOptionalAction
        elif get_origin(annotation) is Literal:
            options["choices"] = list(get_args(annotation))
        elif get_origin(annotation) is list:  # one token split on commas, or several tokens
            options |= {
                "nargs": "+" if spec.get("many") else None,
                "metavar": spec.get("metavar", "V[,V...]"),
            }
        else:
            options["metavar"] = spec.get("metavar", flag.lstrip("-").upper().replace("-", "_"))
        parser.add_argument(flag, **options)


def _flag_value(key: str, raw):
    """A flag's text as the value its config key expects (lists split, numbers parsed, aliases)."""
    import re

    from neurosepclr.config import config_field, safe_load_yaml

    if isinstance(raw, bool):
        return raw
    field, annotation = config_field(key)
    spec = field.metadata

    def scalar(text: str, item_type) -> object:
        if text in spec.get("aliases", {}):
            return spec["aliases"][text]
        return text if item_type is str else safe_load_yaml(text, key)

    if get_origin(annotation) is list:
        (item_type,) = get_args(annotation)
        pattern = "[" + re.escape(spec.get("separators", ",")) + "]"
        tokens = raw if isinstance(raw, list) else [raw]
        return [scalar(part, item_type) for token in tokens for part in re.split(pattern, token) if part]
    return scalar(raw, annotation)


def _resolve_config(args: argparse.Namespace, path: Path | None = None):
    """defaults ← ``--config`` ← ``--set`` ← this command's flags; a bad flag value is a usage error."""
    from neurosepclr.config import check_value, cli_flags, load_config
    from neurosepclr.errors import ConfigError

    given: dict[str, str] = {}
    values: dict = {}
    for flag, key in cli_flags(args.command):
        raw = getattr(args, _dest(flag), None)
        if raw is None:
            continue
        try:
            values[key] = check_value(key, _flag_value(key, raw))
        except ConfigError as exc:
            raise UsageError(
                f"{flag}: {str(exc).split(': ', 1)[-1]} (see neurosepclr {args.command} --help)"
            ) from None
        given[key] = flag
    try:
        return load_config(path or getattr(args, "config", None), args.overrides, values)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        if key in given:  # a rule between keys broken by a flag: say which flag
            raise UsageError(f"{given[key]}: {str(exc).split(': ', 1)[-1]}") from None
        raise


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        type=Path,
        help="YAML config (a recipe from pipelines/); defaults apply to missing keys",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key, e.g. --set loss.beta_reg=100 (repeatable; flags win over it)",
    )


# --------------------------------------------------------------------------- commands


def _cmd_config(args: argparse.Namespace) -> int:
    from neurosepclr.config import USER_KEYS, describe_fields, dump_config

    if args.explain:
        rows = {row[0]: row for row in describe_fields()}
        groups = (
            ("Keys to set for your own cohort:", [rows[key] for key in USER_KEYS]),
            (
                "Advanced keys (benchmarked defaults; change them to study the method):",
                [row for key, row in rows.items() if key not in USER_KEYS],
            ),
        )
        for title, group in groups:
            print(title)
            for key, type_name, default, help_text in group:
                print(f"  {key} ({type_name}, default {default}): {help_text}")
        return ExitCode.OK
    text = dump_config(_resolve_config(args))
    if args.output is None:
        sys.stdout.write(text)
    else:
        from neurosepclr.io import atomic_write_text

        atomic_write_text(args.output, text)
        log.info("resolved config written to %s", args.output)
    return ExitCode.OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    from neurosepclr.data.simulate import simulate

    out = simulate(
        config, args.out_dir, n_jobs=config.pipeline.workers(), force=args.force, progress=not args.quiet
    )
    print(out)
    return ExitCode.OK


def _lock(args: argparse.Namespace, folder: Path, command: str) -> None:
    """Refuse a second command on the same output folder (exit 75); released when this one ends."""
    from neurosepclr.io import folder_lock

    args.stack.enter_context(folder_lock(folder, command))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    from neurosepclr.analysis.evaluate import evaluate

    _print_scorecard(evaluate(args.run_dir, args.truth, args.out, seed=config.seed))
    return ExitCode.OK


def _print_scorecard(card: dict) -> None:
    table = card["table"]
    for subset, scores in card.get("subtypes", {}).items():
        print(f"subtypes ({subset}, n={scores['n']}): ARI {scores['ari']:.3f}  AMI {scores['ami']:.3f}")
    probes = table[table["section"] == "probe"]
    if not probes.empty:
        wide = probes.pivot_table(index=["task", "metric"], columns="space", values="value", sort=False)
        print("held-out linear probes:")
        print(wide.round(3).to_string())
    for label, scores in card.get("saliency", {}).items():
        print(
            f"saliency subtype-{label} → {scores['matched_subtype']}: "
            f"{scores['mass_inside']:.2f} of |saliency| inside the true mask"
        )


def _cmd_run(args: argparse.Namespace) -> int:
    if (args.pipeline is None) == (args.config is None):
        raise UsageError("run: give the pipeline recipe once, as PIPELINE.yaml or --config (see run --help)")
    pipeline = args.pipeline or args.config
    config = _resolve_config(args, pipeline)
    from neurosepclr.io import attach_log_file
    from neurosepclr.pipeline import check_pipeline_inputs, run_pipeline, work_dir_for

    check_pipeline_inputs(config)  # before the work folder is created
    work = work_dir_for(config, pipeline)
    _lock(args, work, "run")
    log_path = attach_log_file(work, "run")
    log.info("run %s in %s (log %s)", pipeline, work, log_path)
    result = run_pipeline(config, pipeline, progress=not args.quiet)
    if "scorecard" in result:
        _print_scorecard(result["scorecard"])
    print(f"report: {result['report']}")
    return ExitCode.OK


def _cmd_subtype(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    from neurosepclr.analysis.subtype import check_atlas_names, default_out_dir, predict_cohort, subtype
    from neurosepclr.io import attach_log_file

    if args.cohort is not None and args.derivatives is not None:
        raise UsageError("subtype: --derivatives locates the run's own cohort; with --cohort it has no use")
    if args.cohort is None:
        check_atlas_names(config.subtype.atlases)  # refused before anything is written
    if args.cohort is not None and args.consensus:
        raise UsageError("subtype: --consensus fits subtypes; with --cohort nothing is fitted")
    for run_dir in [args.run_dir, *args.consensus]:
        if not (run_dir / "config.yaml").is_file():
            raise MissingInputError(
                f"{run_dir}: not a run folder (no config.yaml); run neurosepclr train first"
            )
    out = args.out or default_out_dir(args.run_dir, args.cohort, args.fitted)
    _lock(args, out, "subtype")
    log_path = attach_log_file(out, "subtype")
    log.info("subtype %s into %s (log %s)", args.run_dir, out, log_path)
    if args.cohort is not None:
        result = predict_cohort(args.run_dir, args.cohort, out, args.fitted, config)
        print(f"assigned {result['n']} subject(s) of {args.cohort}: {result['out']}/subtypes.tsv")
        if result["in_training"]:
            print(
                f"warning: {result['in_training']} of them were in the training split (flagged in_training)"
            )
        return ExitCode.OK
    given = getattr(args, "config", None) or "defaults"
    recipe = " ".join([str(given), *(f"--set {o}" for o in getattr(args, "overrides", None) or [])])
    summary = subtype(
        args.run_dir, out, config, derivatives=args.derivatives, recipe=recipe, consensus=args.consensus
    )
    sizes = ", ".join(f"{name}: {summary['sizes'].get(name, 0)}" for name in summary["names"])
    print(f"K = {summary['k']} subtypes ({sizes}); outputs in {summary['out']}")
    if "consensus" in summary:
        agreed = summary["consensus"]
        print(f"consensus of {agreed['runs']} runs: mean ARI between runs {agreed['mean_pairwise_ari']:.2f}")
    if "comparison" in summary:
        compared = summary["comparison"]
        print(f"agreement with the {compared['representation']} subtypes: ARI {compared['ari']:.2f}")
    if "report" in summary:
        print(f"report: {summary['report']}")
    return ExitCode.OK


def _cmd_preprocess(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    from neurosepclr.data.cohort import GroupMapping, build_cohort, parse_shard, select_shard
    from neurosepclr.data.preprocess import check_output_dir, preprocess, write_group_tables
    from neurosepclr.errors import require
    from neurosepclr.io import attach_log_file

    require("ants", "preprocess", "neurosepclr preprocess")  # nothing is written before these checks
    check_output_dir(args.out_dir)
    shard = parse_shard(args.shard) if args.shard is not None else None
    mapping = GroupMapping.from_config(config.data)
    if args.group_only:
        if args.participant_label or shard is not None:
            raise UsageError(
                "preprocess: --group-only tabulates every subject; drop --participant-label/--shard"
            )
        if not (args.out_dir / "dataset_description.json").is_file():
            raise MissingInputError(
                f"{args.out_dir}: no derivatives yet (run the participant-level step first)"
            )
        log_path = attach_log_file(args.out_dir, "preprocess")
        log.info("preprocess --group-only: group tables of %s (log %s)", args.out_dir, log_path)
        qc = write_group_tables(args.out_dir, args.bids_dir, config, mapping)
    else:
        cohort = build_cohort(args.bids_dir, mapping, args.participant_label)
        if shard is not None:
            cohort = select_shard(cohort, *shard)
        if len(cohort) == 0:
            log.warning("shard %s holds no participant; nothing to do", args.shard)
            return ExitCode.OK
        log_path = attach_log_file(args.out_dir, "preprocess")
        log.info(
            "preprocess %d image(s) from %s into %s (log %s)",
            len(cohort),
            args.bids_dir,
            args.out_dir,
            log_path,
        )
        qc = preprocess(
            cohort,
            args.out_dir,
            config,
            n_jobs=config.pipeline.workers(),
            skip_bad=config.pipeline.skip_bad,
            progress=not args.quiet,
        )
    failed = int((~qc["qc_pass"].astype(bool)).sum())
    if failed:
        log.warning(
            "%d image(s) failed QC (template correlation below %.2f, or a brain mask of implausible "
            "volume): see %s/qc.tsv; training leaves them out",
            failed,
            config.preprocess.qc_min_correlation,
            args.out_dir,
        )
    print(args.out_dir)
    return ExitCode.OK


def _cmd_train(args: argparse.Namespace) -> int:
    config = _resolve_config(args)
    from neurosepclr.io import attach_log_file
    from neurosepclr.training.loop import check_run_dir, train

    if not (args.derivatives / "cohort.tsv").is_file():
        raise MissingInputError(f"{args.derivatives}: no cohort.tsv (run neurosepclr preprocess first)")
    check_run_dir(args.run_dir, args.resume, args.force)  # before the log file is written into it
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:  # under torchrun, rank 0 alone holds the run folder
        _lock(args, args.run_dir, "train")
    log_path = attach_log_file(args.run_dir, "train" if rank == 0 else f"train-rank{rank}")
    log.info("train on %s into %s (log %s)", args.derivatives, args.run_dir, log_path)
    scores = train(
        config, args.derivatives, args.run_dir, resume=args.resume, force=args.force, progress=not args.quiet
    )
    for key, value in scores.items():
        print(f"{key}: {value:.3f}")
    print(args.run_dir)
    return ExitCode.OK


# --------------------------------------------------------------------------- arguments of each command


def _args_simulate(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="BIDS folder to create")
    cmd.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def _args_preprocess(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("bids_dir", type=Path, metavar="BIDS_DIR", help="BIDS raw dataset")
    cmd.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="derivatives folder to create or update")
    cmd.add_argument(
        "--participant-label",
        nargs="+",
        metavar="LABEL",
        help="process only these subjects (with or without 'sub-')",
    )
    cmd.add_argument(
        "--shard",
        metavar="I/N",
        help="process only shard I of N (I from 0 to N-1; participants sorted, every N-th from the I-th): "
        "one task of a job array, e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
    )
    cmd.add_argument(
        "--group-only",
        action="store_true",
        help="process nothing: rebuild cohort.tsv, qc.tsv and excluded.tsv from the subjects already in "
        "OUT_DIR (the group step after a job array)",
    )


def _args_train(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "derivatives", type=Path, metavar="DERIVATIVES_DIR", help="output of neurosepclr preprocess"
    )
    cmd.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder to create (or resume)")
    cmd.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    cmd.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing run, or resume despite a changed config or input",
    )


def _args_subtype(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="output of neurosepclr train")
    cmd.add_argument("--out", type=Path, help="output folder (default RUN_DIR/subtype)")
    cmd.add_argument(
        "--derivatives",
        type=Path,
        metavar="DERIVATIVES_DIR",
        help="where the run's derivatives are now, if they moved since training (checked against the "
        "run's manifest.tsv)",
    )
    cmd.add_argument(
        "--cohort",
        type=Path,
        metavar="DERIVATIVES_DIR",
        help="assign another preprocessed cohort to the fitted subtypes (no refit)",
    )
    cmd.add_argument(
        "--fitted",
        type=Path,
        metavar="SUBTYPE_DIR",
        help="with --cohort: folder of the earlier subtype call (default RUN_DIR/subtype)",
    )
    cmd.add_argument(
        "--consensus",
        type=Path,
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="other runs (seeds) trained on the same derivatives and split (train.split_seed): the "
        "subtypes are the consensus of all runs and their bootstrap refits (maps from RUN_DIR)",
    )


def _args_evaluate(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_OR_SUBTYPE_DIR",
        help="folder holding subtypes.tsv and/or embeddings.tsv",
    )
    cmd.add_argument(
        "--truth",
        type=Path,
        required=True,
        metavar="TRUTH_DIR",
        help="derivatives/truth of a simulated cohort (or the cohort's BIDS root)",
    )
    cmd.add_argument(
        "--out", type=Path, help="where to write scorecard.tsv/json (default: beside the inputs)"
    )


def _args_run(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "pipeline",
        type=Path,
        nargs="?",
        metavar="PIPELINE.yaml",
        help="a pipeline recipe (see pipelines/); the same as --config",
    )


def _args_config(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE.yaml",
        help="write the resolved config here instead of standard output",
    )
    cmd.add_argument("--explain", action="store_true", help="list every key with its default and meaning")


COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "simulate": (
        "write a semi-synthetic BIDS cohort with known subtypes (built-in default)",
        _args_simulate,
        _cmd_simulate,
    ),
    "preprocess": (
        "validate a BIDS cohort and register it to MNI space (derivatives)",
        _args_preprocess,
        _cmd_preprocess,
    ),
    "train": ("train the common and salient encoders with the SepCLR objective", _args_train, _cmd_train),
    "subtype": (
        "cluster patients in the salient space; maps, atlas tables and report",
        _args_subtype,
        _cmd_subtype,
    ),
    "evaluate": (
        "score a run against a simulated cohort's truth (ARI, probes, saliency)",
        _args_evaluate,
        _cmd_evaluate,
    ),
    "run": (
        "run a whole pipeline YAML: simulate → preprocess → train → subtype → evaluate",
        _args_run,
        _cmd_run,
    ),
    "config": (
        "print (or write) the fully resolved configuration; --explain lists every key",
        _args_config,
        _cmd_config,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="neurosepclr",
        description="Contrastive analysis of 3D T1w MRI with SepCLR: separate what patients share "
        "with controls (common space) from what is specific to patients (salient space), then "
        "find disease subtypes.",
        epilog="Exit codes: 0 ok, 64 usage, 65 bad input data, 66 missing input, 69 missing optional "
        "dependency, 70 internal error, 73 cannot create output, 74 I/O error, 75 temporary failure, "
        "78 bad configuration.",
    )
    parser.add_argument("--version", action="version", version=f"neurosepclr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug messages")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors; no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (summary, add_arguments, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary)
        _add_common_options(cmd)
        add_arguments(cmd)
        _add_config_options(cmd)
        _add_config_flags(cmd, name)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("neurosepclr: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (never raises for user errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        debug = bool(args.debug)
        _setup_logging(debug, bool(args.quiet))
        if args.command is None:
            parser.print_help(sys.stderr)
            return ExitCode.USAGE
        with contextlib.ExitStack() as stack:  # folder locks held for the whole command
            args.stack = stack
            return int(COMMANDS[args.command][2](args))
    except NeurosepclrError as exc:
        if debug:
            traceback.print_exc()
        print(f"neurosepclr: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("neurosepclr: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            traceback.print_exc()
        print("neurosepclr: error: out of memory; reduce batch size, resolution or workers", file=sys.stderr)
        return int(ExitCode.TEMP_FAIL)
    except Exception as exc:  # an unexpected failure is a bug: say so in one line
        if debug:
            traceback.print_exc()
        print(
            f"neurosepclr: error: internal error ({type(exc).__name__}: {exc}); rerun with --debug "
            "and report it",
            file=sys.stderr,
        )
        return int(ExitCode.SOFTWARE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
