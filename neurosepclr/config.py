"""Typed configuration: defaults ← YAML file ← ``--set key.sub=value`` overrides.

Every section is a frozen-by-convention dataclass. :func:`load_config` builds the resolved
:class:`Config`; any unknown key, wrong type or out-of-range value raises :class:`ConfigError`
naming the dotted key (exit code 78). YAML is read with a safe loader that also refuses anchors and
aliases (no Python tags, no alias bombs). :func:`dump_config` writes the fully resolved config.

Field metadata understood by the validator:

* ``help``: one line shown in docs and in ``neurosepclr config --explain``;
* ``gt`` / ``ge`` / ``le``: numeric bounds (strictly greater, greater-or-equal, less-or-equal);
* ``min_len``: minimum list length; ``unique``: no item twice (its value names the items);
* ``flag`` and ``commands``: the command-line flag that sets the key, and the commands that take it
  (``--seed`` for simulate, subtype and evaluate…); ``aliases`` (words standing for values, such as
  ``auto`` for 0), ``separators`` (characters splitting a list value, one token: ``0.2,0.4``),
  ``many`` (a list flag taking several tokens: ``--atlas aal aicha``) and ``metavar`` say how the
  flag is spelled. :func:`cli_flags` lists them for the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from neurosepclr.errors import ConfigError, MissingInputError, UsageError

MAX_CONFIG_BYTES = 1_000_000


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with a default, a help line, optional bounds and an optional flag."""
    if isinstance(default, list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


Feature = Literal["t1", "gm", "gm_modulated", "logjacobian"]
CommonObjective = Literal["infomax", "nt_xent", "y_aware", "conditional", "decoupled"]


@dataclass
class LossConfig:
    """Weights and options of the SepCLR objective (docs/method.md).

    Defaults are the paper's medical-image settings (Louiset et al., ICLR 2024, §5:
    β_S = 1, β_REG = 10, λ = 10, τ = 0.5).
    """

    tau: float = _opt(0.5, "temperature τ of alignment, uniformity and k-JEM", gt=0)
    beta_s: float = _opt(1.0, "weight β_S of the salient InfoMax term L_S", ge=0)
    beta_reg: float = _opt(10.0, "weight β_REG of the information-less background term", ge=0)
    lambda_jem: float = _opt(10.0, "weight λ of the k-JEM independence term", ge=0)
    lambda_match: float = _opt(
        0.0,
        "weight γ of the common-space matching term: MMD between controls' and patients' common "
        "representations, to keep the diagnosis out of the common space (0: off, the paper)",
        ge=0,
    )
    common: CommonObjective = _opt(
        "infomax",
        "common-space objective: infomax (SepCLR L_C), nt_xent (SimCLR's NT-Xent; with beta_s = "
        "beta_reg = lambda_jem = 0 the single-space SimCLR baseline), y_aware (y-Aware InfoNCE), "
        "conditional (kernel-conditioned alignment/uniformity) or decoupled (decoupled uniformity)",
    )
    metadata: list[str] = _opt(
        [], "participants.tsv columns whose RBF kernel conditions the common objective (age, sex…)"
    )
    metadata_sigma: list[float] = _opt(
        [], "RBF bandwidth per metadata column, in the column's units (age: 5 years)", gt=0
    )
    y_aware_tau: float = _opt(0.1, "temperature of y-Aware InfoNCE (Dufumier et al. 2021)", gt=0)
    decoupled_prior_lambda: float = _opt(
        0.01, "ridge λ of the kernel prior smoothing centroids in decoupled uniformity", gt=0
    )
    attributes: list[str] = _opt(
        [], "target attributes tied one-to-one to the first salient dimensions (scaled to [0,1])"
    )
    attribute_sigma2: float = _opt(0.025, "σ² of the attribute kernel (sup_align)", gt=0)
    beta_attr: float = _opt(1.0, "weight of the attribute-supervised salient alignment", ge=0)

    def validate(self, prefix: str) -> None:
        if len(self.metadata_sigma) != len(self.metadata):
            raise ConfigError(
                f"{prefix}.metadata_sigma: needs one bandwidth per metadata column "
                f"({len(self.metadata)} columns, {len(self.metadata_sigma)} values)"
            )
        if self.common in ("y_aware", "conditional") and not self.metadata:
            raise ConfigError(
                f"{prefix}.metadata: common objective '{self.common}' needs at least one "
                "metadata column (e.g. metadata: [age], metadata_sigma: [5.0])"
            )


@dataclass
class SubtypeSpec:
    """One simulated disease subtype: a name and the atlas regions its atrophy hits."""

    name: str = _opt("subtype", "subtype name (letters, digits, '_' or '-'), used in file names")
    regions: list[str] = _opt([], "AAL3 region names of the subtype's territory", min_len=1)

    def validate(self, prefix: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ConfigError(f"{prefix}.name: use letters, digits, '_' or '-' only, got {self.name!r}")


DEFAULT_SUBTYPES = [
    SubtypeSpec(
        "medial_temporal",
        [
            "Hippocampus_L",
            "Hippocampus_R",
            "ParaHippocampal_L",
            "ParaHippocampal_R",
            "Amygdala_L",
            "Amygdala_R",
        ],
    ),
    SubtypeSpec(
        "frontal",
        [
            "Frontal_Sup_2_L",
            "Frontal_Sup_2_R",
            "Frontal_Mid_2_L",
            "Frontal_Mid_2_R",
            "Frontal_Sup_Medial_L",
            "Frontal_Sup_Medial_R",
        ],
    ),
    SubtypeSpec(
        "parietal_posterior",
        [
            "Parietal_Sup_L",
            "Parietal_Sup_R",
            "Parietal_Inf_L",
            "Parietal_Inf_R",
            "Angular_L",
            "Angular_R",
            "Precuneus_L",
            "Precuneus_R",
        ],
    ),
]


@dataclass
class SimulateConfig:
    """Semi-synthetic cohort of ``neurosepclr simulate`` (docs/simulation.md)."""

    n_controls: int = _opt(
        100, "number of healthy controls (background)", ge=0, flag="--n-controls", commands=("simulate",)
    )
    n_patients_per_subtype: list[int] = _opt(
        [50, 50, 50],
        "patients per subtype: one entry per subtype (imbalance allowed), or one entry for all",
        ge=0,
        min_len=1,
        flag="--n-patients-per-subtype",
        commands=("simulate",),
    )
    subtypes: list[SubtypeSpec] = _opt(DEFAULT_SUBTYPES, "subtypes and their AAL3 territories")
    atrophy: Literal["volume", "intensity"] = _opt(
        "volume",
        "volume: the territory's tissue shrinks (a smooth local contraction, the neighbouring CSF grows) "
        "on top of a partial-volume loss; intensity: the partial-volume loss alone (grey matter takes "
        "CSF intensity; no change of shape)",
        flag="--atrophy",
        commands=("simulate",),
    )
    severity: list[float] = _opt(
        [0.2, 0.4],
        "range [low, high] of the atrophy severity s: with atrophy intensity the fraction of grey "
        "matter lost in the territory; with volume a retreat of the grey matter's edges of up to "
        "4 mm × s plus a partial-volume loss of s / 2 (the truth records the resulting volume change)",
        ge=0,
        le=0.9,
        flag="--severity",
        commands=("simulate",),
    )
    spatial_variability: float = _opt(
        0.0,
        "0: every patient hit in its whole territory; up to 1: random subsets and smooth "
        "random modulation of the territory per patient",
        ge=0,
        le=1,
        flag="--variability",
        commands=("simulate",),
    )
    resolution: float = _opt(
        2.0,
        "resolution (mm) of the simulated anatomy",
        ge=1.0,
        le=4.0,
        flag="--resolution",
        commands=("simulate",),
    )
    geometry: Literal["native", "mni"] = _opt(
        "native",
        "native: each image on its own scanner grid (voxel size, orientation, head pose); "
        "mni: already on the template grid, as after registration",
        flag="--geometry",
        commands=("simulate",),
    )
    n_sites: int = _opt(
        3,
        "number of acquisition sites (contrast, noise, bias field)",
        ge=1,
        le=20,
        flag="--n-sites",
        commands=("simulate",),
    )
    noise: float = _opt(
        1.0, "multiplier of every site's noise level", ge=0, flag="--noise", commands=("simulate",)
    )
    bias_field: float = _opt(1.0, "multiplier of every site's bias-field strength (0: none)", ge=0)
    age_range: list[float] = _opt([55.0, 85.0], "uniform age range (years) for everyone", ge=18, le=100)
    deformation_mm: float = _opt(2.0, "amplitude (mm) of each subject's smooth anatomical deformation", ge=0)
    misalignment_deg: float = _opt(6.0, "max head rotation (degrees) in native geometry", ge=0, le=45)
    misalignment_mm: float = _opt(10.0, "max head translation (mm) in native geometry", ge=0)
    brain_only: bool = _opt(
        False,
        "write brain-only images (no head around the brain, no brain mask in derivatives/truth), "
        "as simulate did before it wrote whole heads; preprocess them with --brain-extraction none",
        flag="--brain-only",
        commands=("simulate",),
    )

    def validate(self, prefix: str) -> None:
        if len(self.n_patients_per_subtype) == 1:
            self.n_patients_per_subtype = self.n_patients_per_subtype * len(self.subtypes)
        if len(self.n_patients_per_subtype) != len(self.subtypes):
            raise ConfigError(
                f"{prefix}.n_patients_per_subtype: {len(self.n_patients_per_subtype)} counts for "
                f"{len(self.subtypes)} subtypes"
            )
        if len(self.severity) != 2 or self.severity[0] > self.severity[1]:
            raise ConfigError(
                f"{prefix}.severity: expected [low, high] with low <= high, got {self.severity}"
            )
        if len(self.age_range) != 2 or self.age_range[0] > self.age_range[1]:
            raise ConfigError(f"{prefix}.age_range: expected [low, high], got {self.age_range}")
        names = [s.name for s in self.subtypes]
        if len(set(names)) != len(names):
            raise ConfigError(f"{prefix}.subtypes: subtype names must be unique, got {names}")


@dataclass
class DataConfig:
    """How a BIDS cohort maps onto background (controls) and target (patients)."""

    group_column: str = _opt(
        "diagnosis",
        "participants.tsv column holding the group",
        flag="--group-column",
        commands=("preprocess",),
    )
    background: list[str] = _opt(
        ["CN"],
        "values of group_column meaning background (controls)",
        min_len=1,
        flag="--background",
        commands=("preprocess",),
    )
    target: list[str] = _opt(
        ["PT"],
        "values of group_column meaning target (patients)",
        min_len=1,
        flag="--target",
        commands=("preprocess",),
    )
    exclude: list[str] = _opt(
        [],
        "values of group_column to leave out (e.g. MCI): those participants are not processed",
        flag="--exclude",
        commands=("preprocess",),
    )
    features: list[Feature] = _opt(
        ["t1"],
        "inputs of the encoders, one channel each, from those preprocess wrote (preprocess.features): "
        "t1, gm, gm_modulated, logjacobian",
        min_len=1,
        unique="feature",
    )

    def validate(self, prefix: str) -> None:
        overlap = sorted(set(self.background) & set(self.target))
        if overlap:
            raise ConfigError(f"{prefix}.target: values both background and target: {', '.join(overlap)}")
        overlap = sorted(set(self.exclude) & (set(self.background) | set(self.target)))
        if overlap:
            raise ConfigError(f"{prefix}.exclude: values also background or target: {', '.join(overlap)}")


WARP_FEATURES = {"gm_modulated", "logjacobian"}  # measured on the nonlinear warp


@dataclass
class PreprocessConfig:
    """``neurosepclr preprocess``: validation limits, registration and output grid (docs/preprocess.md)."""

    resolution: float = _opt(
        2.0, "analysis resolution in mm: 1, 1.5, 2, 3 or 4", flag="--resolution", commands=("preprocess",)
    )
    registration: Literal["affine", "rigid", "syn", "none"] = _opt(
        "affine",
        "registration to MNI152NLin2009aSym: affine (rigid then affine), rigid, syn "
        "(affine then nonlinear) or none (inputs already in MNI space)",
        flag="--registration",
        commands=("preprocess",),
    )
    features: list[Feature] = _opt(
        ["t1"],
        "what is written for the models, any of: t1 (intensity-normalised T1w), gm (grey-matter "
        "probability, Atropos with the template's tissue priors), gm_modulated (gm × Jacobian "
        "determinant of the nonlinear warp: grey-matter volume per voxel, VBM), logjacobian (log-"
        "determinant of the warp, DBM); the last two need registration syn (switched on)",
        min_len=1,
        unique="feature",
        flag="--features",
        many=True,
        commands=("preprocess",),
    )
    brain_extraction: Literal["deepbet", "none"] = _opt(
        "deepbet",
        "brain extraction in native space before registration: deepbet (a 3D CNN shipped in the "
        "pinned deepbet wheel, checked by hash) or none (inputs already skull-stripped: the "
        "template's brain mask applies after registration)",
        flag="--brain-extraction",
        commands=("preprocess",),
    )
    bias_correction: bool = _opt(True, "N4 bias-field correction before registration")
    n4_shrink: int = _opt(4, "N4 shrink factor on the analysis-resolution image", ge=1, le=8)
    n4_iterations: list[int] = _opt(
        [30, 30, 30], "N4 iterations per fitting level (docs/preprocess.md)", ge=1, min_len=1
    )
    crop_margin_mm: float = _opt(4.0, "margin (mm) kept around the template's brain box", ge=0, le=40)
    qc_min_correlation: float = _opt(
        0.5, "QC fails below this correlation with the template inside the brain mask", ge=-1, le=1
    )
    max_nonfinite_fraction: float = _opt(
        1e-4,
        "reject an image whose NaN/Inf voxel fraction exceeds this (fewer are set to 0, with a warning)",
        ge=0,
        le=1,
    )
    max_voxels: int = _opt(512**3, "reject a header declaring more voxels than this (before loading)", ge=1)

    def validate(self, prefix: str) -> None:
        if self.resolution not in (1.0, 1.5, 2.0, 3.0, 4.0):
            raise ConfigError(
                f"{prefix}.resolution: must be one of 1, 1.5, 2, 3, 4 (mm), got {self.resolution}"
            )
        if self.needs_warp() and self.registration == "none":
            raise ConfigError(
                f"{prefix}.features: {', '.join(WARP_FEATURES & set(self.features))} need a nonlinear "
                f"warp; set {prefix}.registration: syn (not none)"
            )
        if self.needs_warp():  # said at the start of preprocess, and in every subject's sidecar
            self.registration = "syn"

    def needs_warp(self) -> bool:
        return bool(WARP_FEATURES & set(self.features))


@dataclass
class ModelConfig:
    """Two independent 3D encoders and their projection heads (docs/method.md)."""

    encoder: Literal["light_cnn", "resnet10", "resnet18", "densenet121"] = _opt(
        "light_cnn", "encoder for both spaces: light_cnn (CPU-friendly) or a MONAI network"
    )
    widths: list[int] = _opt([16, 32, 64, 128], "light_cnn channels per block", ge=1, min_len=1)
    pool_cells: int = _opt(
        1,
        "light_cnn final pooling grid (cells per axis): 1 = global average pooling (location-blind), "
        "2 = one feature vector per octant, kept apart (docs/training.md)",
        ge=1,
        le=8,
    )
    common_dim: int = _opt(32, "dimension d_c of the common representation", ge=1)
    salient_dim: int = _opt(32, "dimension d_s of the salient representation", ge=1)
    head_hidden: int = _opt(128, "hidden width of the projection heads", ge=1)

    def validate(self, prefix: str) -> None:
        if self.pool_cells != 1 and self.encoder != "light_cnn":
            raise ConfigError(f"{prefix}.pool_cells: only light_cnn supports it, not {self.encoder!r}")


@dataclass
class AugmentConfig:
    """Random views: small anatomy-preserving 3D augmentations, drawn per sample (docs/training.md)."""

    rotation_deg: float = _opt(6.0, "max rotation about each axis (degrees)", ge=0, le=45)
    scale: float = _opt(0.05, "max relative scaling", ge=0, le=0.5)
    translation_vox: float = _opt(2.0, "max translation (voxels of the training grid)", ge=0)
    gain: float = _opt(0.2, "max multiplicative intensity change", ge=0, le=1)
    offset: float = _opt(0.2, "max additive intensity change (normalised units)", ge=0)
    bias_field: float = _opt(0.1, "amplitude of a smooth multiplicative bias field", ge=0, le=1)
    noise: float = _opt(0.1, "standard deviation of Gaussian noise", ge=0)
    flip: bool = _opt(False, "left-right flips (off: they would erase lateralised patterns)")
    intensity_features: list[Feature] = _opt(
        ["t1"],
        "input channels (data.features) that gain, offset and bias field change: a scanner changes "
        "T1w intensities, not the tissue volumes gm_modulated and logjacobian measure, where a smooth "
        "bias field would fake the very atrophy SepCLR looks for; every channel gets the spatial "
        "transform and the noise",
        unique="feature",
    )


@dataclass
class TrainConfig:
    """The training loop (docs/training.md)."""

    pool: int = _opt(3, "average-pooling factor from the preprocessed grid to the training grid", ge=1, le=8)
    input_norm: Literal["none", "controls", "site_controls"] = _opt(
        "none",
        "controls: voxel-wise z-score of every input against the training controls' mean and spread; "
        "site_controls: against the mean of the training controls of the subject's own site and the "
        "pooled within-site spread (needs a site column and 2 training controls per site)",
    )
    cache: Literal["ram", "memmap"] = _opt(
        "ram",
        "where the pooled volumes live during training: ram, or memmap (a memory-mapped array in the "
        "run folder, for cohorts larger than RAM; unlinked as soon as it is mapped)",
    )
    cache_dir: str = _opt(
        "",
        "folder of the memmap cache; empty: the run folder (on a cluster, a node-local disk such as "
        "$TMPDIR: every rank writes its own)",
    )
    batch_size: int = _opt(32, "subjects per step (each seen in two views)", ge=2)
    target_fraction: float = _opt(0.5, "fraction of patients in every batch", gt=0, le=1)
    steps: int = _opt(500, "optimiser steps", ge=1)
    lr: float = _opt(3e-4, "Adam learning rate", gt=0)
    weight_decay: float = _opt(0.0, "Adam weight decay", ge=0)
    warmup_steps: int = _opt(20, "linear warm-up steps", ge=0)
    schedule: Literal["cosine", "constant"] = _opt("cosine", "learning-rate schedule after warm-up")
    grad_clip: float = _opt(5.0, "max gradient norm (0: no clipping)", ge=0)
    ema_decay: float = _opt(
        0.0,
        "keep an exponential moving average of the weights (and BatchNorm statistics) with this decay "
        "per step, e.g. 0.99; validation, checkpoints and subtype use the average (0: off)",
        ge=0,
        lt=1,
    )
    precision: Literal["fp32", "bf16", "fp16", "auto"] = _opt(
        "fp32",
        "autocast precision: bf16 on CPU or GPU, fp16 on GPU (with a gradient scaler), auto (bf16 on "
        "a CPU with native bf16 instructions, fp32 otherwise; the choice is written to run.json)",
    )
    channels_last: bool = _opt(False, "use the channels_last_3d memory format")
    val_fraction: float = _opt(
        0.2, "fraction of subjects held out for validation (stratified by group)", ge=0, le=0.9
    )
    split_seed: int = _opt(
        -1,
        "seed of the train/validation split; -1: the global seed (fix it to compare or ensemble "
        "several seeds on the same held-out subjects)",
        ge=-1,
    )
    eval_every: int = _opt(100, "steps between validation probes", ge=1)
    select: Literal["diagnosis", "clusters"] = _opt(
        "diagnosis",
        "what picks the best checkpoint at each evaluation: diagnosis (validation salient patient-vs-"
        "control accuracy minus the common space's excess over chance) or clusters (no subtype label: "
        "split-half stability + silhouette of the training patients' salient clustering, K from "
        "subtype.k or subtype.k_range, minus the common space's cross-validated diagnosis accuracy "
        "above chance on the training subjects)",
    )
    checkpoint_every: int = _opt(50, "steps between checkpoints", ge=1)
    device: Literal["auto", "cpu", "cuda"] = _opt(
        "auto", "auto: cuda when available", flag="--device", commands=("subtype",)
    )
    gather_embeddings: bool = _opt(
        True, "with several processes (torchrun), compute the loss on the all-gathered global batch"
    )
    threads: int = _opt(0, "torch CPU threads (0: torch's default)", ge=0)
    truth: str = _opt("", "optional derivatives/truth folder: k-means subtype ARI during validation")
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "random views"})


@dataclass
class SubtypeConfig:
    """``neurosepclr subtype`` and the ``subtype`` step of ``neurosepclr run``. The command reads it from
    its own ``--config``/``--set``/flags (defaults otherwise), not from the run folder's config; under
    ``train.select: clusters`` training scored checkpoints with ``k``, ``k_range``, ``standardise``
    and ``directions`` of the training config."""

    k: int = _opt(
        0,
        "number of subtypes; 0: choose K from stability and silhouette, referred to noise (null_draws)",
        ge=0,
        flag="--k",
        commands=("subtype",),
        aliases={"auto": 0},
        metavar="K|auto",
    )
    k_range: list[int] = _opt(
        [2, 6],
        "smallest and largest K tried when k is 0",
        ge=2,
        min_len=2,
        flag="--k-range",
        commands=("subtype",),
        separators=",-",
        metavar="LOW-HIGH",
    )
    null_draws: int = _opt(
        5,
        "structureless cohorts (one Gaussian with the patients' mean and covariance) whose stability "
        "and silhouette are subtracted before K is chosen; 0: the raw (stability + silhouette) / 2",
        ge=0,
        le=50,
        flag="--null-draws",
        commands=("subtype",),
    )
    method: Literal["kmeans", "gmm"] = _opt(
        "kmeans", "clustering of standardised salient coordinates", flag="--method", commands=("subtype",)
    )
    standardise: Literal["controls", "patients"] = _opt(
        "controls",
        "controls: whiten salient coordinates by the training controls' mean and covariance "
        "(Mahalanobis units of normal variability); patients: z-score each coordinate over the patients",
        flag="--standardise",
        commands=("subtype",),
    )
    directions: bool | None = _opt(
        None,
        "cluster the direction of each patient's whitened deviation from the controls (unit length), "
        "not its size; needs standardise: controls (empty: on with controls, off with patients)",
        flag="--directions",
        commands=("subtype",),
    )
    n_resamples: int = _opt(20, "split-half resamples of the stability score of each K", ge=2, le=1000)
    confidence: float = _opt(
        0.9,
        "a patient is 'confident' when its assignment frequency over the bootstrap refits reaches this "
        "(the membership probability when bootstrap is 0)",
        ge=0,
        le=1,
    )
    consensus_method: Literal["joint", "coassociation"] = _opt(
        "joint",
        "how the runs of a consensus (--consensus, pipeline.consensus_seeds) are combined: joint (one "
        "clustering of every run's standardised salient coordinates side by side: the mean of the runs' "
        "similarities) or coassociation (each run clustered alone and with bootstrap refits, then one "
        "clustering of how often patients are grouped together, as HYDRA)",
        flag="--consensus-method",
        commands=("subtype",),
    )
    bootstrap: int = _opt(
        100,
        "refits of the subtypes on bootstrap resamples of the training patients and controls; each "
        "patient's assignment frequency over them is its calibrated uncertainty (0: none)",
        ge=0,
        le=10000,
        flag="--bootstrap",
        commands=("subtype",),
    )
    atlases: list[str] = _opt(
        ["aal"],
        "atlases of the region tables: names from atlases/manifest.tsv (aal, desikan_killiany, "
        "destrieux, neuromorphometrics, marsatlas, aicha) or your own LABELS.nii.gz:LABELS.tsv",
        min_len=1,
        flag="--atlas",
        many=True,
        commands=("subtype",),
        metavar="NAME|LABELS.nii.gz:LABELS.tsv",
    )
    saliency: Literal["integrated_gradients", "smoothgrad", "occlusion"] = _opt(
        "integrated_gradients", "attribution method (captum)", flag="--saliency", commands=("subtype",)
    )
    checkpoint: Literal["best", "last"] = _opt(
        "best", "weights used for subtyping", flag="--checkpoint", commands=("subtype",)
    )
    per_subject_maps: bool = _opt(
        False, "also write one saliency map per subject", flag="--per-subject-maps", commands=("subtype",)
    )
    covariates: list[str] = _opt(
        ["age", "sex", "site"],
        "cohort.tsv columns the effect-size maps adjust for, where present (numeric: linear; "
        "others: one indicator per level)",
        flag="--covariates",
        many=True,
        commands=("subtype",),
    )
    effect_size_threshold: float = _opt(
        0.8,
        "|Cohen's d| drawn on the effect-size maps and clustered in their tables (0.8: a large effect)",
        gt=0,
        flag="--effect-size-threshold",
        commands=("subtype",),
    )
    saliency_threshold: float = _opt(
        3.09,
        "z of the saliency test (subtype vs controls, one-sided Welch) drawn and clustered (3.09: "
        "p < 0.001 at one voxel, uncorrected)",
        gt=0,
        flag="--saliency-threshold",
        commands=("subtype",),
    )
    min_cluster_mm3: float = _opt(
        100.0, "smallest cluster listed in the cluster tables, in mm³", ge=0, flag="--min-cluster-mm3",
        commands=("subtype",),
    )  # fmt: skip
    viewer: bool = _opt(
        False,
        "also write an interactive viewer page per subtype map (nilearn view_img; offline, ~2 MB each)",
        flag="--viewer",
        commands=("subtype",),
    )
    patient_pages: bool = _opt(
        True, "write one HTML page per patient (patients/)", flag="--patient-pages", commands=("subtype",)
    )
    saliency_sample: int = _opt(
        100,
        "subjects attributed per subtype and among the controls for the group maps, drawn at random "
        "(seeded) where a group is larger; 0: all (--per-subject-maps attributes everyone)",
        ge=0,
        flag="--saliency-sample",
        commands=("subtype",),
    )
    representation: Literal["sepclr", "cpca"] = _opt(
        "sepclr",
        "what the subtypes are clustered in: sepclr (the run's salient space; with several run "
        "folders, their consensus) or cpca (contrastive PCA of the same inputs, the linear baseline, "
        "alpha chosen without labels)",
        flag="--representation",
        commands=("subtype",),
    )
    compare: bool = _opt(
        True,
        "also subtype with the other representation (sepclr or cpca) and report both subtypings and "
        "their agreement (adjusted Rand index)",
        flag="--compare",
        commands=("subtype",),
    )
    cpca_alphas: list[float] = _opt(
        [1.0, 3.0, 10.0, 30.0, 100.0],
        "contrast strengths alpha tried by contrastive PCA; the one whose subtypes score best (stability "
        "and silhouette above noise, as for K) is kept",
        min_len=1,
        gt=0,
    )
    cpca_components: int = _opt(5, "contrastive PCA coordinates clustered", ge=1, le=100)

    def validate(self, prefix: str) -> None:
        if len(self.k_range) != 2 or self.k_range[0] > self.k_range[1]:
            raise ConfigError(f"{prefix}.k_range: expected [low, high] with low <= high, got {self.k_range}")
        if self.k == 1:
            raise ConfigError(f"{prefix}.k: must be 0 (choose K) or >= 2, got 1")
        if self.directions is True and self.standardise != "controls":
            raise ConfigError(
                f"{prefix}.directions: true needs {prefix}.standardise: controls (set directions: false)"
            )

    def cluster_directions(self) -> bool:
        """Whether to cluster directions: ``directions`` when set, else on with ``controls`` only."""
        return self.standardise == "controls" if self.directions is None else self.directions

    def k_values(self) -> list[int]:
        """The K tried: ``k`` alone when it is set, else every K of ``k_range``."""
        return [self.k] if self.k else list(range(self.k_range[0], self.k_range[1] + 1))


@dataclass
class PipelineConfig:
    """``neurosepclr run``: which cohort, where the outputs go."""

    bids: str = _opt("", "BIDS dataset to analyse; empty: simulate one from the simulate section")
    work_dir: str = _opt("", "output root; empty: work/<pipeline file name> beside the current folder")
    truth: str = _opt("", "truth folder for evaluate; empty: the simulated cohort's, none for real data")
    n_jobs: int = _opt(
        2,
        "parallel worker processes of simulate and preprocess; 0 (or auto): one per CPU core",
        ge=0,
        aliases={"auto": 0},
        flag="--n-jobs",
        commands=("simulate", "preprocess"),
    )
    skip_bad: bool = _opt(
        False,
        "exclude images failing validation (excluded.tsv) instead of stopping",
        flag="--skip-bad",
        commands=("preprocess",),
    )
    consensus_seeds: list[int] = _opt(
        [],
        "further seeds trained beside the run (folders run-seed<S>, same split as the run); the subtypes "
        "are the consensus of every run (subtype --consensus)",
    )

    def workers(self) -> int:
        """``n_jobs`` with 0 resolved to the CPU cores this process may use."""
        if self.n_jobs:
            return self.n_jobs
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


@dataclass
class Config:
    """The resolved configuration of one neurosepclr run."""

    seed: int = _opt(
        0,
        "global random seed (Python, NumPy, torch)",
        ge=0,
        flag="--seed",
        commands=("simulate", "subtype", "evaluate"),
    )
    simulate: SimulateConfig = field(
        default_factory=SimulateConfig, metadata={"help": "built-in semi-synthetic cohort"}
    )
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "cohort group mapping"})
    preprocess: PreprocessConfig = field(
        default_factory=PreprocessConfig, metadata={"help": "validation, registration, output grid"}
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "encoders and heads"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training loop"})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "SepCLR objective"})
    subtype: SubtypeConfig = field(default_factory=SubtypeConfig, metadata={"help": "subtypes and maps"})
    pipeline: PipelineConfig = field(
        default_factory=PipelineConfig, metadata={"help": "neurosepclr run: cohort and output root"}
    )


# --------------------------------------------------------------------------- YAML reading


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also refuses aliases (no billion-laughs expansion)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in neurosepclr configs",
                self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)


# YAML 1.1 reads "3e-4" (no dot) as a string; accept the scientific notation users type for rates.
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load_yaml(text: str, source: str) -> Any:
    """Parse YAML text safely; errors become :class:`ConfigError` naming ``source``."""
    if len(text.encode("utf-8", errors="replace")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        reason = str(exc).replace("\n", " ")
        raise ConfigError(f"{source}: not valid YAML: {reason}") from None


def key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every dotted key of a YAML mapping, for error messages."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[dotted] = key.start_mark.line + 1
                walk(value, dotted)

    try:
        walk(yaml.compose(text, Loader=_StrictSafeLoader), "")
    except yaml.YAMLError:
        pass
    return lines


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a plain mapping (empty file → empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"config file not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not UTF-8 text") from None
    data = safe_load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {_kind(data)}")
    return data


# --------------------------------------------------------------------------- validation


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _coerce(value: Any, annotation: Any, key: str, meta: dict[str, Any]) -> Any:
    """Check ``value`` against a type annotation and the field's bounds; return the typed value."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [a for a in options if a is not type(None)]
        return _coerce(value, inner[0], key, meta)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item_type,) = get_args(annotation)
        if not isinstance(value, list) and not dataclasses.is_dataclass(item_type):
            value = _as_list(value, item_type, key, meta)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_kind(value)} {value!r}")
        if len(value) < meta.get("min_len", 0):
            raise ConfigError(f"{key}: needs at least {meta['min_len']} items")
        if "unique" in meta and len(set(map(str, value))) != len(value):
            raise ConfigError(f"{key}: each {meta['unique']} once, got {value}")
        return [_coerce(v, item_type, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_kind(value)} {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_kind(value)} {value!r}")
        _check_bounds(value, key, meta)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        _check_bounds(value, key, meta)
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_kind(value)} {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
    raise TypeError(f"unsupported config annotation {annotation!r} for {key}")  # programming error


def _as_list(value: Any, item_type: Any, key: str, meta: dict[str, Any]) -> Any:
    """One value given for a list key: a string is split on the key's separators (``AD,MCI``,
    ``0.2,0.4``), any other scalar becomes a list of one; a mapping stays what it is (an error)."""
    if isinstance(value, str):
        parts = [p.strip() for p in re.split("[" + re.escape(meta.get("separators", ",")) + "]", value)]
        parts = [p for p in parts if p]
        return parts if item_type is str else [safe_load_yaml(p, key) for p in parts]
    if isinstance(value, (bool, int, float)):
        return [value]
    return value


def _check_bounds(value: float, key: str, meta: dict[str, Any]) -> None:
    if "gt" in meta and not value > meta["gt"]:
        raise ConfigError(f"{key}: must be > {meta['gt']}, got {value!r}")
    if "ge" in meta and not value >= meta["ge"]:
        raise ConfigError(f"{key}: must be >= {meta['ge']}, got {value!r}")
    if "le" in meta and not value <= meta["le"]:
        raise ConfigError(f"{key}: must be <= {meta['le']}, got {value!r}")
    if "lt" in meta and not value < meta["lt"]:
        raise ConfigError(f"{key}: must be < {meta['lt']}, got {value!r}")


def _did_you_mean(key: str, prefix: str, fields: dict[str, Any]) -> str:
    """`` (did you mean train.steps?)``: a close name in this section, or the same name in another."""
    import difflib

    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.7)
    if close:
        return f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)"
    elsewhere = [row[0] for row in describe_fields() if row[0].rsplit(".", 1)[-1] == key]
    return f" (did you mean {' or '.join(elsewhere)}?)" if elsewhere else ""


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_kind(data)} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            known = ", ".join(sorted(fields))
            raise ConfigError(
                f"{dotted}: unknown key{_did_you_mean(str(key), prefix, fields)} (known keys here: {known})"
            )
    values = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _coerce(data[name], hints[name], dotted, dict(f.metadata))
        elif dataclasses.is_dataclass(hints[name]):  # an absent section: its defaults, validated
            values[name] = _build(hints[name], {}, dotted)
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key.sub=value``; the value is read as one YAML scalar/list (``[age, sex]``)."""
    if "=" not in text:
        raise UsageError(f"--set {text!r}: expected KEY=VALUE (e.g. --set loss.tau=0.3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise UsageError(f"--set {text!r}: empty key (expected KEY=VALUE, e.g. --set loss.tau=0.3)")
    value = safe_load_yaml(raw, f"--set {key}") if raw.strip() else ""
    return parts, value


def _apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


# Options removed as unproven (docs/decisions/0007-structure.md): the default earlier versions wrote,
# and whether only that default kept the option a no-op (False: it mattered only with another removed
# option switched on). A config written before the removal still loads when it kept such values;
# run digests hash the defaults, so earlier runs keep theirs (runfolder.config_digest).
REMOVED_OPTIONS: dict[str, tuple[Any, bool]] = {
    "model.members": (1, True),
    "model.downsample": ("max", True),
    "loss.gamma_uniform": (1.0, True),
    "loss.salient_prototypes": (0, True),
    "loss.beta_proto": (1.0, False),
    "loss.proto_tau": (0.1, False),
    "loss.sinkhorn_eps": (0.05, False),
    "train.augment.cutout": (0.0, True),
    "train.augment.deformation_vox": (0.0, True),
    "train.augment.deformation_spacing_vox": (2.0, False),
}


def _drop_removed_options(data: dict[str, Any], source: str) -> None:
    """Remove the options of :data:`REMOVED_OPTIONS` that hold a no-op value; refuse the others."""
    for dotted, (default, only_default) in REMOVED_OPTIONS.items():
        *sections, key = dotted.split(".")
        node: Any = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key not in node:
            continue
        if only_default and node[key] != default:
            raise ConfigError(
                f"{source}: {dotted}: {node[key]!r} uses an option removed in this version "
                "(docs/decisions/0007-structure.md); retrain with a current config"
            )
        del node[key]


def load_config(
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    values: dict[str, Any] | None = None,
) -> Config:
    """Resolve defaults ← YAML file ← ``--set`` overrides ← ``values`` (dotted key → value, e.g. from
    command-line flags) into a validated :class:`Config`. Options removed since an earlier version
    (:data:`REMOVED_OPTIONS`) are dropped from the file when they hold their no-op value."""
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    _drop_removed_options(data, str(path))  # a config written by an earlier version (a run folder's)
    overridden = set()
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(data, parts, value)
        overridden.add(".".join(parts))
    for dotted, value in (values or {}).items():
        _apply_override(data, dotted.split("."), value)
        overridden.add(dotted)
    try:
        return _build(Config, data, "")
    except ConfigError as exc:
        key = re.sub(r"\[\d+\]$", "", str(exc).split(":", 1)[0])
        if path is None or key in overridden:
            raise
        line = key_lines(Path(path).read_text(encoding="utf-8")).get(key)
        if line is None:
            raise
        raise ConfigError(f"{path}, line {line}: {exc}") from None


def config_field(dotted: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field and type annotation of a dotted key (``subtype.k_range``)."""
    cls: Any = Config
    *sections, name = dotted.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return fields[name], typing.get_type_hints(cls)[name]


def cli_flags(command: str, cls: type = Config, prefix: str = "") -> list[tuple[str, str]]:
    """(flag, dotted key) of every config key that ``neurosepclr COMMAND`` takes as a flag."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            found += cli_flags(command, hints[f.name], dotted)
        elif command in f.metadata.get("commands", ()):
            found.append((f.metadata["flag"], dotted))
    return found


def check_value(dotted: str, value: Any) -> Any:
    """Type- and bound-check one value for a dotted key on its own (cross-key rules not applied)."""
    field_, annotation = config_field(dotted)
    return _coerce(value, annotation, dotted, dict(field_.metadata))


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested mapping of a config (all defaults made explicit)."""
    return dataclasses.asdict(config)


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML text (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


# The keys a user sets for a cohort of their own (`config --explain` lists them first); every other
# key is a research or tuning option with a benchmarked default.
USER_KEYS = (
    "pipeline.bids",
    "pipeline.work_dir",
    "pipeline.n_jobs",
    "data.group_column",
    "data.background",
    "data.target",
    "data.exclude",
    "preprocess.registration",
    "preprocess.features",
    "data.features",
    "train.device",
    "subtype.k",
    "subtype.k_range",
    "subtype.atlases",
)


def describe_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every leaf option, for docs and ``--explain``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            rows.extend(describe_fields(annotation, dotted))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if get_origin(annotation) is Literal:
            type_name = "one of " + " | ".join(map(str, get_args(annotation)))
        elif get_origin(annotation) is list:
            (item,) = get_args(annotation)
            shown = " | ".join(map(str, get_args(item))) if get_origin(item) is Literal else item.__name__
            type_name = f"list of {shown}"
        else:
            type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append((dotted, type_name, repr(default), f.metadata.get("help", "")))
    return rows
