"""Command line: ``neurosepclr {simulate,preprocess,train,subtype,evaluate,run,config}``.

Heavy libraries (torch, MONAI, nilearn, ANTs) are imported inside the commands so that ``--help``
and ``--version`` stay fast. Every failure a user can act on is printed as one line
``neurosepclr: error: …`` with the sysexits code of :class:`neurosepclr.errors.ExitCode`; a
traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from neurosepclr import __version__
from neurosepclr.errors import ExitCode, MissingInputError, NeurosepclrError, NotAvailableError, UsageError

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
        help="override one config key, e.g. --set loss.beta_reg=100 (repeatable)",
    )


# --------------------------------------------------------------------------- commands


def _cmd_config(args: argparse.Namespace) -> int:
    from neurosepclr.config import describe_fields, dump_config, load_config

    if args.explain:
        for key, type_name, default, help_text in describe_fields():
            print(f"{key} ({type_name}, default {default}): {help_text}")
        return ExitCode.OK
    config = load_config(args.config, args.overrides)
    text = dump_config(config)
    if args.output is None:
        sys.stdout.write(text)
    else:
        from neurosepclr.io import atomic_write_text

        atomic_write_text(args.output, text)
        log.info("resolved config written to %s", args.output)
    return ExitCode.OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from neurosepclr.config import load_config

    overrides = list(args.overrides)
    flags = {
        "seed": args.seed,
        "simulate.n_controls": args.n_controls,
        "simulate.geometry": args.geometry,
        "simulate.resolution": args.resolution,
        "simulate.spatial_variability": args.variability,
        "simulate.noise": args.noise,
        "simulate.n_sites": args.n_sites,
    }
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.n_patients_per_subtype is not None:
        overrides.append(f"simulate.n_patients_per_subtype=[{args.n_patients_per_subtype}]")
    if args.severity is not None:
        overrides.append(f"simulate.severity=[{args.severity}]")
    config = load_config(args.config, overrides)
    from neurosepclr.data.simulate import simulate

    out = simulate(config, args.out_dir, n_jobs=args.n_jobs, force=args.force, progress=not args.quiet)
    print(out)
    return ExitCode.OK


def _lock(args: argparse.Namespace, folder: Path, command: str) -> None:
    """Refuse a second command on the same output folder (exit 75); released when this one ends."""
    from neurosepclr.io import folder_lock

    args.stack.enter_context(folder_lock(folder, command))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from neurosepclr.analysis.evaluate import evaluate

    _print_scorecard(evaluate(args.run_dir, args.truth, args.out, seed=args.seed))
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
    from neurosepclr.config import load_config

    config = load_config(args.pipeline, args.overrides)
    from neurosepclr.io import attach_log_file
    from neurosepclr.pipeline import run_pipeline, work_dir_for

    work = work_dir_for(config, args.pipeline)
    _lock(args, work, "run")
    log_path = attach_log_file(work, "run")
    log.info("run %s in %s (log %s)", args.pipeline, work, log_path)
    result = run_pipeline(config, args.pipeline, progress=not args.quiet)
    if "scorecard" in result:
        _print_scorecard(result["scorecard"])
    print(f"report: {result['report']}")
    return ExitCode.OK


def _parse_k_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in text.split("-"))
    except ValueError:
        raise UsageError(f"--k-range: expected LOW-HIGH such as 2-6, got '{text}'") from None
    if not 2 <= low <= high:
        raise UsageError(f"--k-range: need 2 <= LOW <= HIGH, got '{text}'")
    return low, high


def _cmd_subtype(args: argparse.Namespace) -> int:
    from neurosepclr.io import attach_log_file

    if args.k != "auto" and not (args.k.isdigit() and int(args.k) >= 2):
        raise UsageError(f"--k: expected 'auto' or an integer >= 2, got '{args.k}'")
    if args.null_draws < 0:
        raise UsageError(f"--null-draws: expected an integer >= 0, got {args.null_draws}")
    atlases, user_atlases = [], []
    for item in args.atlas:
        if ":" in item:
            image, table = item.split(":", 1)
            user_atlases.append((Path(image), Path(table)))
        else:
            atlases.append(item)
    from neurosepclr.analysis.subtype import SubtypeOptions, default_out_dir, predict_cohort, subtype
    from neurosepclr.atlases import LICENCES

    unknown = [name for name in atlases if name not in LICENCES]
    if unknown:
        raise MissingInputError(
            f"--atlas: unknown atlas '{unknown[0]}' (known: {', '.join(sorted(LICENCES))})"
        )
    options = SubtypeOptions(
        k="auto" if args.k == "auto" else int(args.k),
        k_range=_parse_k_range(args.k_range),
        null_draws=args.null_draws,
        method=args.method,
        standardise=args.standardise,
        directions=_directions(args),
        atlases=atlases,
        user_atlases=user_atlases,
        saliency=args.saliency,
        checkpoint=args.checkpoint,
        per_subject_maps=args.per_subject_maps,
        device=args.device,
        seed=args.seed,
    )
    if not (args.run_dir / "config.yaml").is_file():
        raise MissingInputError(
            f"{args.run_dir}: not a run folder (no config.yaml); run neurosepclr train first"
        )
    out = args.out or default_out_dir(args.run_dir, args.cohort, args.fitted)
    _lock(args, out, "subtype")
    log_path = attach_log_file(out, "subtype")
    log.info("subtype %s into %s (log %s)", args.run_dir, out, log_path)
    if args.cohort is not None:
        result = predict_cohort(args.run_dir, args.cohort, out, args.fitted, device=args.device)
        print(f"assigned {result['n']} subject(s) of {args.cohort}: {result['out']}/subtypes.tsv")
        if result["in_training"]:
            print(
                f"warning: {result['in_training']} of them were in the training split (flagged in_training)"
            )
        return ExitCode.OK
    summary = subtype(args.run_dir, out, options)
    sizes = ", ".join(f"{name}: {summary['sizes'].get(name, 0)}" for name in summary["names"])
    print(f"K = {summary['k']} subtypes ({sizes}); outputs in {summary['out']}")
    if "report" in summary:
        print(f"report: {summary['report']}")
    return ExitCode.OK


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from neurosepclr.config import load_config

    overrides = list(args.overrides)
    flags = {
        "preprocess.resolution": args.resolution,
        "preprocess.registration": args.registration,
        "data.group_column": args.group_column,
    }
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.background:
        overrides.append(f"data.background=[{args.background}]")
    if args.target:
        overrides.append(f"data.target=[{args.target}]")
    config = load_config(args.config, overrides)

    from neurosepclr.data.cohort import GroupMapping, build_cohort
    from neurosepclr.data.preprocess import preprocess
    from neurosepclr.io import attach_log_file

    mapping = GroupMapping(config.data.group_column, tuple(config.data.background), tuple(config.data.target))
    cohort = build_cohort(args.bids_dir, mapping, args.participant_label)
    _lock(args, args.out_dir, "preprocess")
    log_path = attach_log_file(args.out_dir, "preprocess")
    log.info(
        "preprocess %d image(s) from %s into %s (log %s)", len(cohort), args.bids_dir, args.out_dir, log_path
    )
    qc = preprocess(
        cohort, args.out_dir, config, n_jobs=args.n_jobs, skip_bad=args.skip_bad, progress=not args.quiet
    )
    failed = int((~qc["qc_pass"].astype(bool)).sum())
    if failed:
        log.warning(
            "%d image(s) failed QC (template correlation below %.2f): see %s/qc.tsv",
            failed,
            config.preprocess.qc_min_correlation,
            args.out_dir,
        )
    print(args.out_dir)
    return ExitCode.OK


def _cmd_train(args: argparse.Namespace) -> int:
    from neurosepclr.config import load_config

    config = load_config(args.config, args.overrides)
    from neurosepclr.io import attach_log_file
    from neurosepclr.training.loop import train

    if not (args.derivatives / "cohort.tsv").is_file():
        from neurosepclr.errors import MissingInputError

        raise MissingInputError(f"{args.derivatives}: no cohort.tsv (run neurosepclr preprocess first)")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 alone holds the run folder
        _lock(args, args.run_dir, "train")
    log_path = attach_log_file(args.run_dir, "train")
    log.info("train on %s into %s (log %s)", args.derivatives, args.run_dir, log_path)
    scores = train(
        config, args.derivatives, args.run_dir, resume=args.resume, force=args.force, progress=not args.quiet
    )
    for key, value in scores.items():
        print(f"{key}: {value:.3f}")
    print(args.run_dir)
    return ExitCode.OK


def _not_available(name: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise NotAvailableError(
            f"'neurosepclr {name}' is not available yet in version {__version__} ({issue})"
        )

    return run


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "simulate": (
        "write a semi-synthetic BIDS cohort with known subtypes (built-in default)",
        _cmd_simulate,
    ),
    "preprocess": (
        "validate a BIDS cohort and register it to MNI space (derivatives)",
        _cmd_preprocess,
    ),
    "train": (
        "train the common and salient encoders with the SepCLR objective",
        _cmd_train,
    ),
    "subtype": (
        "cluster patients in the salient space; maps, atlas tables and report",
        _cmd_subtype,
    ),
    "evaluate": (
        "score a run against a simulated cohort's truth (ARI, probes, saliency)",
        _cmd_evaluate,
    ),
    "run": (
        "run a whole pipeline YAML: simulate → preprocess → train → subtype → evaluate",
        _cmd_run,
    ),
    "config": ("print (or write) the fully resolved configuration; --explain lists every key", _cmd_config),
}


def _add_simulate_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="BIDS folder to create")
    _add_config_options(cmd)
    cmd.add_argument("--seed", type=int, help="random seed (same seed, same bytes)")
    cmd.add_argument("--n-controls", type=int, help="number of healthy controls (default 100)")
    cmd.add_argument(
        "--n-patients-per-subtype",
        metavar="N[,N...]",
        help="patients per subtype: one number for all, or one per subtype (default 50)",
    )
    cmd.add_argument(
        "--geometry",
        choices=["native", "mni"],
        help="native: scanner grids of their own (default); mni: already on the template grid",
    )
    cmd.add_argument("--resolution", type=float, help="simulation resolution in mm (default 2)")
    cmd.add_argument("--severity", metavar="LOW,HIGH", help="fraction of grey matter lost (default 0.2,0.4)")
    cmd.add_argument("--variability", type=float, help="spatial variability of atrophy, 0–1 (default 0)")
    cmd.add_argument("--noise", type=float, help="multiplier of the sites' noise levels (default 1)")
    cmd.add_argument("--n-sites", type=int, help="number of acquisition sites (default 3)")
    cmd.add_argument("--n-jobs", type=int, default=1, help="parallel worker processes (default 1)")
    cmd.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def _directions(args: argparse.Namespace) -> bool:
    """--directions defaults to on with --standardise controls and is refused with patients."""
    if args.directions and args.standardise != "controls":
        raise UsageError("--directions needs --standardise controls (directions from the controls' mean)")
    return args.standardise == "controls" if args.directions is None else args.directions


def _add_subtype_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="output of neurosepclr train")
    cmd.add_argument("--out", type=Path, help="output folder (default RUN_DIR/subtype)")
    cmd.add_argument(
        "--k", default="auto", help="number of subtypes, or 'auto' (stability + silhouette above noise)"
    )
    cmd.add_argument("--k-range", default="2-6", metavar="LOW-HIGH", help="K values tried (default 2-6)")
    cmd.add_argument(
        "--null-draws",
        type=int,
        default=5,
        metavar="N",
        help="structureless cohorts (a Gaussian with the patients' covariance) whose stability and "
        "silhouette are subtracted before K is chosen (default 5; 0: raw stability + silhouette)",
    )
    cmd.add_argument(
        "--method", choices=["kmeans", "gmm"], default="kmeans", help="clustering (default kmeans)"
    )
    cmd.add_argument(
        "--standardise",
        choices=["controls", "patients"],
        default="controls",
        help="controls (default): whiten salient coordinates by the training controls' mean and "
        "covariance; patients: z-score each coordinate over the training patients",
    )
    cmd.add_argument(
        "--directions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cluster the direction of each patient's whitened deviation from the controls, not its "
        "size (default with --standardise controls; not available with patients)",
    )
    cmd.add_argument(
        "--atlas",
        nargs="+",
        default=["aal"],
        metavar="NAME|LABELS.nii.gz:LABELS.tsv",
        help="atlases for region tables: aal (default), desikan_killiany, destrieux, neuromorphometrics, "
        "marsatlas, aicha, or your own label image and index/name table",
    )
    cmd.add_argument(
        "--saliency",
        choices=["integrated_gradients", "smoothgrad", "occlusion"],
        default="integrated_gradients",
        help="attribution method (captum; default integrated_gradients)",
    )
    cmd.add_argument("--checkpoint", choices=["best", "last"], default="best", help="weights to use")
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
        "--per-subject-maps", action="store_true", help="also write one saliency map per subject"
    )
    cmd.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="compute device")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the clustering and resampling")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="neurosepclr",
        description="Contrastive analysis of 3D T1w MRI with SepCLR: separate what patients share "
        "with controls (common space) from what is specific to patients (salient space), then "
        "find disease subtypes.",
        epilog="Exit codes: 0 ok, 64 usage, 65 bad input data, 66 missing input, 70 internal "
        "error, 73 cannot create output, 74 I/O error, 75 temporary failure, 78 bad configuration.",
    )
    parser.add_argument("--version", action="version", version=f"neurosepclr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug messages")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors; no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (summary, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary)
        _add_common_options(cmd)
        if name == "simulate":
            _add_simulate_options(cmd)
        if name == "preprocess":
            cmd.add_argument("bids_dir", type=Path, metavar="BIDS_DIR", help="BIDS raw dataset")
            cmd.add_argument(
                "out_dir", type=Path, metavar="OUT_DIR", help="derivatives folder to create or update"
            )
            _add_config_options(cmd)
            cmd.add_argument(
                "--participant-label",
                nargs="+",
                metavar="LABEL",
                help="process only these subjects (with or without 'sub-')",
            )
            cmd.add_argument(
                "--group-column", help="participants.tsv column holding the group (default diagnosis)"
            )
            cmd.add_argument(
                "--background", metavar="V[,V...]", help="values meaning background (default CN)"
            )
            cmd.add_argument("--target", metavar="V[,V...]", help="values meaning target (default PT)")
            cmd.add_argument(
                "--resolution", type=float, help="analysis resolution in mm: 1, 1.5, 2 (default), 3, 4"
            )
            cmd.add_argument(
                "--registration",
                choices=["affine", "rigid", "syn", "none"],
                help="registration to MNI (default affine); none for inputs already in MNI space",
            )
            cmd.add_argument("--n-jobs", type=int, default=1, help="parallel worker processes (default 1)")
            cmd.add_argument(
                "--skip-bad",
                action="store_true",
                help="exclude images failing validation into excluded.tsv instead of stopping",
            )
        if name == "train":
            cmd.add_argument(
                "derivatives", type=Path, metavar="DERIVATIVES_DIR", help="output of neurosepclr preprocess"
            )
            cmd.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder to create (or resume)")
            _add_config_options(cmd)
            cmd.add_argument(
                "--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt"
            )
            cmd.add_argument(
                "--force",
                action="store_true",
                help="overwrite an existing run, or resume despite a changed config or input",
            )
        if name == "evaluate":
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
            cmd.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
        if name == "subtype":
            _add_subtype_options(cmd)
        if name == "run":
            cmd.add_argument(
                "pipeline", type=Path, metavar="PIPELINE.yaml", help="a pipeline recipe (see pipelines/)"
            )
            cmd.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override one key of the recipe (repeatable), e.g. --set pipeline.work_dir=out",
            )
        if name == "config":
            _add_config_options(cmd)
            cmd.add_argument(
                "--output",
                "-o",
                type=Path,
                metavar="FILE.yaml",
                help="write the resolved config here instead of standard output",
            )
            cmd.add_argument(
                "--explain", action="store_true", help="list every key with its default and meaning"
            )
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
            return int(COMMANDS[args.command][1](args))
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
