"""``neurosepclr run PIPELINE.yaml``: simulate (when no BIDS is named) → preprocess → train → subtype →
evaluate (when truth exists), in one work folder, skipping steps whose outputs are up to date.

Work folder (``pipeline.work_dir``, default ``work/<pipeline name>``)::

    bids/           the simulated cohort (only when pipeline.bids is empty)
    derivatives/    preprocess output (its own per-subject cache redoes only what changed)
    run/            train output; run/subtype/ subtype output with report.html and scorecard
    pipeline.json   the digest of each step's settings, so a rerun knows what is up to date

A step is redone when its settings digest changed or its outputs are missing; a finished training
run with the same config and inputs is kept, a shorter one with the same settings is resumed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from neurosepclr.analysis.evaluate import evaluate
from neurosepclr.analysis.subtype import subtype
from neurosepclr.config import Config, config_to_dict
from neurosepclr.data.cohort import GroupMapping, build_cohort
from neurosepclr.data.preprocess import preprocess
from neurosepclr.data.simulate import simulate
from neurosepclr.errors import ConfigError, MissingInputError, require
from neurosepclr.io import atomic_write_text, sha256_json
from neurosepclr.runfolder import config_digest
from neurosepclr.training.checkpoint import load_checkpoint
from neurosepclr.training.data import derivatives_manifest, inputs_digest
from neurosepclr.training.loop import train

log = logging.getLogger("neurosepclr")


def _digest(*parts) -> str:
    return sha256_json(parts)


def work_dir_for(config: Config, pipeline_path: str | Path | None) -> Path:
    if config.pipeline.work_dir:
        return Path(config.pipeline.work_dir)
    stem = Path(pipeline_path).stem if pipeline_path else "pipeline"
    return Path("work") / stem


def _state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def check_pipeline_inputs(config: Config) -> None:
    """What ``run`` needs before it writes anything: ANTsPy for preprocessing, and the BIDS
    dataset a real-cohort recipe names."""
    require("ants", "preprocess", "neurosepclr run (its preprocess step)")
    if config.pipeline.bids and not (Path(config.pipeline.bids) / "participants.tsv").is_file():
        bids = Path(config.pipeline.bids)
        what = "has no participants.tsv" if bids.is_dir() else "does not exist"
        raise MissingInputError(
            f"pipeline.bids: {bids} {what}; set it to your BIDS dataset (edit the recipe or "
            "--set pipeline.bids=DIR), or leave it empty to run on a simulated cohort"
        )


def run_pipeline(config: Config, pipeline_path: str | Path | None = None, progress: bool = True) -> dict:
    """Run every step; returns paths (bids, derivatives, run, subtype, report) and the scorecard."""
    check_pipeline_inputs(config)
    work = work_dir_for(config, pipeline_path)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "pipeline.json"
    state = _state(state_path)
    sections = config_to_dict(config)

    def record(step: str, digest: str) -> None:
        state[step] = digest
        atomic_write_text(state_path, json.dumps(state, indent=2) + "\n")

    # 1. cohort
    if config.pipeline.bids:
        bids = Path(config.pipeline.bids)
        truth = Path(config.pipeline.truth) if config.pipeline.truth else None
    else:
        bids = work / "bids"
        digest = _digest(sections["seed"], sections["simulate"])
        if state.get("simulate") == digest and (bids / "participants.tsv").is_file():
            log.info("simulate: up to date (%s)", bids)
        else:
            log.info("simulate: writing %s", bids)
            simulate(config, bids, n_jobs=config.pipeline.workers(), force=True, progress=progress)
            record("simulate", digest)
        truth = Path(config.pipeline.truth) if config.pipeline.truth else bids / "derivatives" / "truth"
    if truth is not None and not (truth / "truth.tsv").is_file():
        raise MissingInputError(f"pipeline.truth: {truth} has no truth.tsv")

    # 2. preprocess (its own content + parameter cache decides per subject)
    missing = [f for f in config.data.features if f not in config.preprocess.features]
    if missing:
        raise ConfigError(
            f"data.features: {', '.join(missing)} not written by preprocess.features "
            f"{config.preprocess.features}; add them there"
        )
    derivatives = work / "derivatives"
    mapping = GroupMapping.from_config(config.data)
    cohort = build_cohort(bids, mapping, None)
    log.info("preprocess: %d image(s) into %s", len(cohort), derivatives)
    preprocess(
        cohort,
        derivatives,
        config,
        n_jobs=config.pipeline.workers(),
        skip_bad=config.pipeline.skip_bad,
        progress=progress,
    )

    # 3. train: keep a finished run with the same settings and inputs, resume a shorter one; with
    # pipeline.consensus_seeds, one run per further seed on the same split
    train_config = config
    if truth is not None and not config.train.truth:
        train_config = replace(config, train=replace(config.train, truth=str(truth)))
    manifest = derivatives_manifest(derivatives, tuple(config.data.features))
    run_dir = work / "run"
    runs = {run_dir: train_config}
    split_seed = config.train.split_seed if config.train.split_seed >= 0 else config.seed
    for seed in config.pipeline.consensus_seeds:  # the run's own split, whatever their seed
        seeded = replace(train_config, seed=seed, train=replace(train_config.train, split_seed=split_seed))
        runs[work / f"run-seed{seed}"] = seeded
    digests = []
    for folder, run_config in runs.items():
        digests.append(train_if_needed(run_config, derivatives, folder, manifest, progress))
    train_digest = digests[0] if len(digests) == 1 else _digest(*digests)

    # 4. subtype
    subtype_dir = run_dir / "subtype"
    digest = _digest(train_digest, sections["subtype"], sections["seed"])
    if state.get("subtype") == digest and (subtype_dir / "report.html").is_file():
        log.info("subtype: up to date (%s)", subtype_dir)
    else:
        consensus = [folder for folder in runs if folder != run_dir]
        subtype(run_dir, subtype_dir, config, recipe=str(pipeline_path or "defaults"), consensus=consensus)
        record("subtype", digest)

    # 5. evaluate
    result = {
        "work_dir": str(work),
        "bids": str(bids),
        "derivatives": str(derivatives),
        "run": str(run_dir),
        "subtype": str(subtype_dir),
        "report": str(subtype_dir / "report.html"),
    }
    if truth is not None:
        result["scorecard"] = evaluate(subtype_dir, truth, seed=config.seed)
    return result


def train_if_needed(config: Config, derivatives: Path, run_dir: Path, manifest, progress: bool) -> str:
    """Train ``run_dir`` unless it finished with the same settings and inputs (resume a shorter run);
    returns the digest of what it was trained with."""
    wanted = {"config_sha256": config_digest(config), "inputs_sha256": inputs_digest(manifest)}
    done_step = _finished_step(run_dir, wanted)
    if done_step is not None and done_step >= config.train.steps:
        log.info("train: up to date (%s, %d steps)", run_dir, done_step)
    else:
        resume = done_step is not None
        log.info("train: %s %s", "resuming" if resume else "training", run_dir)
        train(config, derivatives, run_dir, resume=resume, force=not resume, progress=progress)
    return _digest(wanted, config.train.steps)


def _finished_step(run_dir: Path, wanted: dict[str, str]) -> int | None:
    """Step of ``run_dir``'s last checkpoint when it was trained with the same settings, else None."""
    run_json = run_dir / "run.json"
    if not run_json.is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
        return None
    run = json.loads(run_json.read_text())
    if any(run.get(key) != value for key, value in wanted.items()):
        return None
    return int(load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"])
