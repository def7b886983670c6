"""``neurosepclr train``: one readable SepCLR training loop.

Every random draw is a pure function of ``(seed, step)`` (balanced batch, augmentation parameters),
so a run resumed from a checkpoint continues exactly as the uninterrupted run would on CPU. The run
folder describes itself (:mod:`neurosepclr.runfolder`): resolved config, versions, input manifest
with content hashes, the train/validation split, ``metrics.jsonl`` (every loss term per step, probes
per evaluation), the ``last`` and ``best`` checkpoints and the final representations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neurosepclr import __version__
from neurosepclr.compute import autocast_factory, representations, resolve_device, resolve_precision
from neurosepclr.config import Config, dump_config
from neurosepclr.data.cohort import BACKGROUND, TARGET
from neurosepclr.data.truth import load_truth
from neurosepclr.errors import ConfigError, InputDataError, NeurosepclrError, OutputError
from neurosepclr.io import atomic_write_text, tsv_text, write_dataset_description
from neurosepclr.models import build_model
from neurosepclr.objectives import loss_from_config
from neurosepclr.runfolder import (
    config_digest,
    derivatives_record,
    software_versions,
    subject_frame,
    write_embeddings,
)
from neurosepclr.training.checkpoint import load_checkpoint, save_checkpoint
from neurosepclr.training.data import (
    CohortTensors,
    control_reference,
    inputs_digest,
    load_derivatives,
    normalise_in_place,
    read_cohort_table,
    site_control_reference,
    site_indices,
    stratified_split,
)
from neurosepclr.training.distributed import (
    DistContext,
    all_finite,
    barrier,
    cleanup,
    gather,
    init_distributed,
    ranks_agree,
    shard,
)
from neurosepclr.training.sampler import balanced_batch
from neurosepclr.training.validation import cluster_structure, probe_scores
from neurosepclr.training.views import apply_view, draw_view_params, intensity_channels, select

log = logging.getLogger("neurosepclr")


class TrainingDiverged(NeurosepclrError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


def learning_rate_factor(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay to 0 (or constant)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of all augmentation draws at ``step``."""
    mixed = int.from_bytes(hashlib.sha256(f"{seed}:{step}".encode()).digest()[:8], "little") & (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def metadata_tensor(table: pd.DataFrame, columns: list[str]) -> torch.Tensor | None:
    """Meta-data columns as floats; categorical columns as integer codes (sorted values)."""
    if not columns:
        return None
    out = []
    for column in columns:
        if column not in table:
            raise ConfigError(f"loss.metadata: column '{column}' is not in the cohort table")
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            codes = {v: i for i, v in enumerate(sorted(table[column].dropna().astype(str).unique()))}
            values = table[column].astype(str).map(codes)
        if values.isna().any():
            raise ConfigError(f"loss.metadata: column '{column}' has missing values")
        out.append(torch.tensor(values.to_numpy(dtype=float, copy=True), dtype=torch.float32))
    return torch.stack(out, dim=1)


def attribute_tensor(table: pd.DataFrame, columns: list[str], train: np.ndarray) -> torch.Tensor | None:
    """Target attributes scaled to [0, 1] with the training patients' range."""
    if not columns:
        return None
    out = []
    for column in columns:
        if column not in table:
            raise ConfigError(f"loss.attributes: column '{column}' is not in the cohort table")
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        reference = values[train & np.isfinite(values)]
        low, high = (reference.min(), reference.max()) if reference.size else (0.0, 1.0)
        out.append(torch.as_tensor((values - low) / max(high - low, 1e-12), dtype=torch.float32))
    return torch.stack(out, dim=1)


def selection_score(scores: dict[str, float], select: str = "diagnosis") -> float:
    """Best-checkpoint criterion; both subtract what the common space still knows about the group
    (its balanced accuracy above chance), since the common space should hold none of it.
    ``diagnosis``: salient patient-vs-control accuracy on the validation subjects, minus the common
    space's excess there. ``clusters``: the label-free cluster-structure score of
    :func:`~neurosepclr.training.validation.cluster_structure`, minus the common space's excess in
    cross-validation over the training subjects (``train/common/diagnosis_cv``; the group is an
    input of contrastive analysis, not a label to discover)."""
    if select == "clusters":
        value = scores.get("train/salient/cluster_score", float("nan"))
        return (
            float("-inf")
            if math.isnan(value)
            else value - excess_over_chance(scores.get("train/common/diagnosis_cv"))
        )
    salient = scores.get("val/salient/diagnosis_bacc", float("nan"))
    if math.isnan(salient):
        return float("-inf")
    return salient - excess_over_chance(scores.get("val/common/diagnosis_bacc"))


def excess_over_chance(balanced_accuracy: float | None) -> float:
    """max(0, accuracy − 0.5); 0 when the probe could not be fitted."""
    if balanced_accuracy is None or math.isnan(balanced_accuracy):
        return 0.0
    return max(0.0, balanced_accuracy - 0.5)


# --------------------------------------------------------------------------- the steps of train()


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse, before anything is written, a run folder that already holds something (a run, or
    other files) unless resuming or forcing."""
    bookkeeping = {"logs", ".neurosepclr.lock"}
    if not run_dir.exists() or resume or force:
        return
    if not run_dir.is_dir():
        raise OutputError(f"{run_dir} is a file, not a folder; choose a new folder for the run")
    held = sorted(p.name for p in run_dir.iterdir() if p.name not in bookkeeping)
    if (run_dir / "config.yaml").is_file():
        raise OutputError(
            f"{run_dir} already holds a run; use --resume to continue it or --force to overwrite"
        )
    if held:
        shown = ", ".join(held[:3]) + (", …" if len(held) > 3 else "")
        raise OutputError(f"{run_dir} holds other files ({shown}); choose a new or empty folder for the run")


MIN_TRAIN_PER_GROUP = 1  # controls and patients each, in the training split (none crashes the loss)


def check_cohort_size(groups: pd.Series, split: np.ndarray, val_fraction: float) -> None:
    """Enough controls and patients for balanced batches and the held-out probes: at least
    ``MIN_TRAIN_PER_GROUP`` of each in training and, with a validation split, one of each there."""
    values = groups.to_numpy()
    counts = {
        (side, group): int(((values == group) & (split == side)).sum())
        for side in ("train", "val")
        for group in (BACKGROUND, TARGET)
    }
    least_val = 1 if val_fraction > 0 else 0
    if (
        min(counts["train", BACKGROUND], counts["train", TARGET]) >= MIN_TRAIN_PER_GROUP
        and min(counts["val", BACKGROUND], counts["val", TARGET]) >= least_val
    ):
        return
    raise InputDataError(
        f"too few subjects to train: {counts['train', BACKGROUND]} controls and {counts['train', TARGET]} "
        f"patients in training, {counts['val', BACKGROUND]} and {counts['val', TARGET]} in validation "
        f"(train.val_fraction={val_fraction:g}); at least {MIN_TRAIN_PER_GROUP} of each in training and "
        f"{least_val} of each in validation are needed: add subjects"
    )


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    check_run_dir(run_dir, resume, force)
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {run_dir}: {exc.strerror or exc}") from None


def reference_normalise(config: Config, data: CohortTensors, split: np.ndarray) -> dict[str, object]:
    """``train.input_norm``: z-score every input against the training controls (in place); returns
    the reference kept in the checkpoints, so ``subtype`` normalises new inputs the same way."""
    training_controls = torch.from_numpy(split == "train") & ~data.is_target
    if config.train.input_norm == "controls":
        mean, spread = control_reference(data.volumes, training_controls)
        data.volumes = normalise_in_place(data.volumes, mean, spread)
        return {"input_mean": mean, "input_spread": spread}
    if config.train.input_norm == "site_controls":
        if "site" not in data.table:
            raise ConfigError("train.input_norm=site_controls needs a site column in participants.tsv")
        mean, spread, sites = site_control_reference(data.volumes, training_controls, data.table["site"])
        data.volumes = normalise_in_place(data.volumes, mean, spread, site_indices(data.table, sites))
        return {"input_mean": mean, "input_spread": spread, "input_sites": sites}
    return {}


def write_run_files(
    run_dir: Path,
    config: Config,
    data: CohortTensors,
    split: np.ndarray,
    derivatives: Path,
    digests: dict[str, str],
    precision: str,
) -> None:
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    write_dataset_description(run_dir, "neurosepclr SepCLR run", "neurosepclr train", derivatives)
    run = {
        "seed": config.seed,
        **derivatives_record(run_dir, derivatives),
        "versions": software_versions(),
        "n_subjects": len(data),
        "grid_shape": list(data.volumes.shape[2:]),
        "grid_affine": data.affine.tolist(),
        "precision": precision,
        **digests,
    }
    atomic_write_text(run_dir / "run.json", json.dumps(run, indent=2) + "\n")
    atomic_write_text(run_dir / "manifest.tsv", tsv_text(data.manifest))
    atomic_write_text(run_dir / "split.tsv", tsv_text(subject_frame(data.table, split)))


@dataclass
class Optimisation:
    """The network and everything that updates it; one checkpoint holds all of it."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: torch.optim.swa_utils.AveragedModel | None = None  # train.ema_decay > 0
    start: int = 0
    best_score: float = float("-inf")
    best_step: int = -1

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validated, checkpointed as ``model`` and analysed: the EMA when kept."""
        return self.net if self.ema is None else self.ema.module

    def state(self, step: int) -> dict:
        extra = {} if self.ema is None else {"training_model": self.net.state_dict()}
        return {
            **extra,
            "model": self.evaluated.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": step,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "torch_rng": torch.get_rng_state(),
        }


def build_optimisation(
    config: Config, device: torch.device, ctx: DistContext, precision: str
) -> Optimisation:
    cfg = config.train
    net = build_model(config.model, in_channels=len(config.data.features))
    if ctx.enabled and device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = None
    if cfg.ema_decay > 0:  # weights and BatchNorm statistics averaged over the steps
        averaging = torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)
        ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=averaging, use_buffers=True)
    return Optimisation(net, optimizer, scheduler, scaler, ema)


def resume_from(opt: Optimisation, path: Path, digests: dict[str, str], force: bool) -> None:
    """Load ``last.pt`` into ``opt``; refuse a checkpoint of other settings or inputs unless forced."""
    state = load_checkpoint(path)
    for key in ("config_sha256", "inputs_sha256"):
        if state.get(key) != digests[key] and not force:
            raise ConfigError(
                f"--resume refused: {key.split('_')[0]} changed since the checkpoint "
                f"(checkpoint {str(state.get(key))[:12]}, now {digests[key][:12]}); "
                "use --force to resume anyway"
            )
    if opt.ema is not None:
        if "training_model" not in state:
            raise ConfigError(f"--resume refused: {path} was written without train.ema_decay")
        opt.net.load_state_dict(state["training_model"])
        opt.ema.module.load_state_dict(state["model"])
        opt.ema.n_averaged.fill_(int(state["step"]))
    else:
        opt.net.load_state_dict(state["model"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    opt.start = int(state["step"])
    opt.best_score, opt.best_step = float(state["best_score"]), int(state["best_step"])
    log.info("resumed from step %d", opt.start)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the metrics lines written after the checkpoint a run resumes from."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def two_views(
    volumes, batch, local, augment, intensity, generator, device, channels_last: bool
) -> torch.Tensor:
    """Two random views of this rank's rows of the global batch, stacked (all first views, then all
    second views). The parameters are drawn for the whole global batch, so every rank draws the
    same numbers and a run is the same whatever the number of processes."""
    x = volumes[batch[local]].to(device)
    params1 = draw_view_params(len(batch), augment, generator)
    params2 = draw_view_params(len(batch), augment, generator)
    views = torch.cat(
        [apply_view(x, select(params, local), augment, intensity) for params in (params1, params2)]
    )
    return views.contiguous(memory_format=torch.channels_last_3d) if channels_last else views


def projections(model, views, batch, local, ctx: DistContext, gathered: bool, autocast, with_features: bool):
    """Head outputs (c1, c2, s1, s2) of the two views and, when ``with_features`` (the matching term
    is on), their common representations before the head (f1, f2), else None; all-gathered across
    ranks when the loss is computed on the global batch; and the cohort rows they belong to."""
    with autocast():
        out = model(views)
    heads = (*out.common_proj.float().chunk(2), *out.salient_proj.float().chunk(2))
    features = out.common_rep.float().chunk(2) if with_features else None
    if not gathered:
        return heads, features, batch[local]
    heads = tuple(gather(t, ctx, with_grad=True) for t in heads)
    if features is not None:
        features = tuple(gather(t, ctx, with_grad=True) for t in features)
    ranks = [shard(np.arange(len(batch)), DistContext(r, ctx.world_size)) for r in range(ctx.world_size)]
    return heads, features, batch[np.concatenate(ranks)]


def optimiser_step(opt: Optimisation, model, total: torch.Tensor, grad_clip: float) -> float:
    """Backward, gradient clipping (0: none), Adam and scheduler step; returns the gradient norm."""
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(total).backward()
    opt.scaler.unscale_(opt.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    if opt.ema is not None:
        opt.ema.update_parameters(opt.net)
    return float(grad_norm)


def validation_scores(config: Config, net, data: CohortTensors, split, truth, device, autocast) -> dict:
    """Probes on held-out subjects and the label-free cluster structure of the training patients."""
    common, salient = representations(
        net, data.volumes, device, channels_last=config.train.channels_last, autocast=autocast
    )
    sub = config.subtype
    rule = {"standardise": sub.standardise, "directions": sub.cluster_directions()}
    scores = probe_scores(common, salient, data.table, split, truth, config.seed, **rule)
    return scores | cluster_structure(salient, data.table, split, sub.k_values(), config.seed, **rule)


# --------------------------------------------------------------------------- train


def train(
    config: Config,
    derivatives: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """Train SepCLR on a ``preprocess`` output folder; returns the final validation scores.

    Under ``torchrun`` every rank runs this function on its shard of each global batch; only rank 0
    writes the run folder.
    """
    from tqdm.auto import tqdm

    cfg = config.train
    derivatives, run_dir = Path(derivatives), Path(run_dir)
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type == "cuda")
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    main_rank = ctx.is_main
    table = read_cohort_table(derivatives)  # who trains, checked before anything is written
    split_seed = config.seed if cfg.split_seed < 0 else cfg.split_seed
    split = stratified_split(table["group"], cfg.val_fraction, split_seed, table["participant_id"])
    check_cohort_size(table["group"], split, cfg.val_fraction)
    if main_rank:
        prepare_run_dir(run_dir, resume, force)
    barrier(ctx)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(config.seed)  # model initialisation; every later draw is seeded by (seed, step)
    precision = resolve_precision(cfg.precision, device)
    autocast = autocast_factory(precision, device)

    # 1. data: pooled volumes, control-referenced inputs
    cache = Path(cfg.cache_dir or run_dir) / f".volumes-rank{ctx.rank}.npy" if cfg.cache == "memmap" else None
    data = load_derivatives(derivatives, cfg.pool, tuple(config.data.features), memmap=cache, table=table)
    intensity = intensity_channels(config.data.features, cfg.augment.intensity_features)
    train_idx = np.flatnonzero(split == "train")
    digests = {"config_sha256": config_digest(config), "inputs_sha256": inputs_digest(data.manifest)}
    truth = load_truth(cfg.truth).table if cfg.truth else None
    reference = reference_normalise(config, data, split)

    # 2. network, objective, optimiser (resumed from the last checkpoint when asked)
    opt = build_optimisation(config, device, ctx, precision)
    net = opt.net
    loss_fn = loss_from_config(config.loss)
    metadata = metadata_tensor(data.table, config.loss.metadata)
    attributes = attribute_tensor(data.table, config.loss.attributes, split == "train")
    last_path = run_dir / "checkpoints" / "last.pt"
    if resume and last_path.is_file():
        resume_from(opt, last_path, digests, force)
    elif resume:
        log.warning("--resume: no checkpoint in %s, starting from step 0", run_dir)
    model = torch.nn.parallel.DistributedDataParallel(net) if ctx.enabled else net
    metrics_path = run_dir / "metrics.jsonl"
    if main_rank:
        write_run_files(run_dir, config, data, split, derivatives, digests, precision)
        truncate_metrics(metrics_path, opt.start)

    def checkpoint(name: str, step: int) -> None:
        if main_rank:
            state = {**opt.state(step), **digests, **reference, "version": __version__}
            save_checkpoint(run_dir / "checkpoints" / f"{name}.pt", state)

    # 3. the loop: balanced batch → two random views → SepCLR objective → Adam step
    is_target = data.is_target
    is_target_train = is_target.numpy()[train_idx]
    gathered = ctx.enabled and cfg.gather_embeddings
    scores: dict[str, float] = {}
    model.train()
    steps = tqdm(
        range(opt.start, cfg.steps),
        initial=opt.start,
        total=cfg.steps,
        desc="train",
        unit="step",
        disable=not (progress and main_rank),
    )
    with contextlib.ExitStack() as stack:
        metrics = stack.enter_context(metrics_path.open("a", encoding="utf-8")) if main_rank else None
        for step in steps:
            started = time.perf_counter()
            batch = train_idx[
                balanced_batch(is_target_train, cfg.batch_size, cfg.target_fraction, step, config.seed)
            ]
            if ctx.enabled:  # equal shards: all-gather needs the same row count on every rank
                batch = batch[: len(batch) - len(batch) % ctx.world_size]
            local = shard(np.arange(len(batch)), ctx)  # this rank's rows of the global batch
            generator = step_generator(config.seed, step)
            views = two_views(
                data.volumes, batch, local, cfg.augment, intensity, generator, device, cfg.channels_last
            )
            (c1, c2, s1, s2), features, rows = projections(
                model, views, batch, local, ctx, gathered, autocast, loss_fn.lambda_match > 0
            )
            meta, attr = (None if t is None else t[rows].to(device) for t in (metadata, attributes))
            terms = loss_fn(
                c1,
                c2,
                s1,
                s2,
                is_target[rows].to(device),
                metadata=meta,
                attributes=attr,
                common_features=features,
            )
            if not all_finite(terms.total, ctx):
                values = ", ".join(f"{k}={v:.4g}" for k, v in terms.as_floats().items())
                raise TrainingDiverged(
                    f"step {step}: loss is not finite ({values}); the last good checkpoint is "
                    f"{last_path}; lower train.lr or use fp32"
                )
            grad_norm = optimiser_step(opt, model, terms.total, cfg.grad_clip)
            done = step + 1
            record = {
                "step": done,
                **{f"loss/{k}": round(v, 6) for k, v in terms.as_floats().items()},
                "lr": opt.optimizer.param_groups[0]["lr"],
                "grad_norm": grad_norm,
                "seconds": round(time.perf_counter() - started, 4),
            }
            # 4. validation and checkpoints
            if (done % cfg.eval_every == 0 or done == cfg.steps) and main_rank:
                scores = validation_scores(config, opt.evaluated, data, split, truth, device, autocast)
                record |= {k: round(v, 4) for k, v in scores.items()}
                score = selection_score(scores, cfg.select)
                if score > opt.best_score:
                    opt.best_score, opt.best_step = score, done
                    checkpoint("best", done)
            if main_rank:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                checkpoint("last", done)
            steps.set_postfix(loss=f"{record['loss/total']:.3f}")
            barrier(ctx) if done % cfg.eval_every == 0 else None

    # 5. final representations
    agree = ranks_agree(model, ctx)
    if main_rank:
        common, salient = representations(
            opt.evaluated, data.volumes, device, channels_last=cfg.channels_last, autocast=autocast
        )
        write_embeddings(run_dir / "embeddings.tsv", data.table, split, common, salient)
        if ctx.enabled:
            run = json.loads((run_dir / "run.json").read_text())
            run["distributed"] = {
                "world_size": ctx.world_size,
                "ranks_agree": agree,
                "gather_embeddings": cfg.gather_embeddings,
            }
            atomic_write_text(run_dir / "run.json", json.dumps(run, indent=2) + "\n")
        log.info(
            "trained %d steps; best checkpoint at step %d; run folder %s", cfg.steps, opt.best_step, run_dir
        )
    barrier(ctx)
    cleanup(ctx)
    if not agree:
        raise NeurosepclrError("distributed training ended with different weights on different ranks")
    return scores
