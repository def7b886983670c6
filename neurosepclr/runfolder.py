"""A training run folder, as ``train`` writes it and ``subtype`` and ``run`` read it.

``RUN_DIR/``: ``config.yaml`` (resolved), ``run.json`` (seed, versions, grid, digests, where the
derivatives were), ``manifest.tsv`` (every input image with its SHA-256), ``split.tsv``,
``metrics.jsonl``, ``checkpoints/{last,best}.pt`` and ``embeddings.tsv``. The derivatives stay
outside the run folder: ``run.json`` records their path (absolute, and relative to the run folder),
and a moved derivatives folder is accepted when its images hash to the run's manifest.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from neurosepclr.config import REMOVED_OPTIONS, Config, config_to_dict
from neurosepclr.errors import MissingInputError
from neurosepclr.io import atomic_write_text, sha256_json

# Config sections that change the trained weights, and keys inside them that do not.
TRAINING_SECTIONS = ("seed", "data", "model", "train", "loss")
NOT_TRAINING_KEYS = {
    "train": ("steps", "eval_every", "checkpoint_every", "cache", "cache_dir"),
    "data": ("exclude",),  # chooses who preprocess keeps; training reads the cohort table
}
# subtype keys that choose the best checkpoint under train.select: clusters
CHECKPOINT_SELECTION_KEYS = ("k", "k_range", "standardise", "directions")


def config_digest(config: Config) -> str:
    """Hash of every setting that changes the trained weights or the best checkpoint (not the
    number of steps). With ``train.select: clusters`` the subtype settings that score a checkpoint
    are part of it."""
    data = {key: value for key, value in config_to_dict(config).items() if key in TRAINING_SECTIONS}
    for section, keys in NOT_TRAINING_KEYS.items():
        for key in keys:
            data[section].pop(key, None)
    # a run trained before options were removed (decision 0007) or data.features added keeps its
    # digest, so it still resumes and `neurosepclr run` still reuses it
    augment = data["train"]["augment"]
    if set(data["data"]["features"]) <= set(augment["intensity_features"]):
        # every channel takes the scanner-like views, as before intensity_features existed
        del augment["intensity_features"]
    if data["data"]["features"] == ["t1"]:
        del data["data"]["features"]
    if data["train"]["ema_decay"] == 0:  # added later; off is what every earlier run did
        del data["train"]["ema_decay"]
    if data["loss"]["lambda_match"] == 0:  # added later; off is what every earlier run did
        del data["loss"]["lambda_match"]
    for dotted, (default, _) in REMOVED_OPTIONS.items():
        *sections, key = dotted.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[key] = default
    if config.train.select == "clusters":
        subtype = config_to_dict(config.subtype)
        data["subtype"] = {key: subtype[key] for key in CHECKPOINT_SELECTION_KEYS}
    return sha256_json(data)


def subject_frame(table: pd.DataFrame, split: np.ndarray) -> pd.DataFrame:
    """The key columns of every per-subject output: participant_id, session_id, group, split."""
    return pd.DataFrame(
        {
            "participant_id": table["participant_id"].to_numpy(),
            "session_id": table["session_id"].to_numpy(),
            "group": table["group"].to_numpy(),
            "split": split,
        }
    )


def write_embeddings(
    path: Path,
    table: pd.DataFrame,
    split: np.ndarray,
    common: np.ndarray,
    salient: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """``embeddings.tsv``: the subject keys, then ``common_k``, ``salient_k`` and ``<space>_k`` of each
    ``extra`` space (6 significant digits)."""
    spaces = {"common": common, "salient": salient} | (extra or {})
    coords = {f"{name}_{k}": values[:, k] for name, values in spaces.items() for k in range(values.shape[1])}
    frame = pd.concat([subject_frame(table, split), pd.DataFrame(coords)], axis=1)
    atomic_write_text(
        path, frame.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g", lineterminator="\n")
    )


def software_versions() -> dict[str, str]:
    """Versions of neurosepclr and of the libraries that shape its numbers."""
    import monai
    import nibabel
    import sklearn
    import torch

    from neurosepclr import __version__

    return {
        "neurosepclr": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "nibabel": nibabel.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def derivatives_record(run_dir: Path, derivatives: Path) -> dict[str, str]:
    """The ``run.json`` entries locating the derivatives: absolute, and relative to the run folder."""
    absolute = derivatives.resolve()
    return {
        "derivatives": str(absolute),
        "derivatives_relative": os.path.relpath(absolute, run_dir.resolve()),
    }


def derivatives_candidates(run_dir: Path, run: dict, override: str | Path | None = None) -> list[Path]:
    """Where the run's derivatives may be now, in order: ``override`` when given, else the recorded
    absolute path and the recorded path relative to the run folder (both moved together); only
    folders holding a ``cohort.tsv``. The caller keeps the first whose images match the manifest."""
    if override is not None:
        folder = Path(override)
        if not (folder / "cohort.tsv").is_file():
            raise MissingInputError(f"--derivatives: {folder} has no cohort.tsv (not a preprocess output)")
        return [folder]
    candidates = [Path(run["derivatives"])]
    if "derivatives_relative" in run:
        candidates.append(run_dir / run["derivatives_relative"])
    found = [folder for folder in candidates if (folder / "cohort.tsv").is_file()]
    if not found:
        raise MissingInputError(
            f"{run_dir}: the derivatives it was trained on are not at {run['derivatives']}; "
            "pass their new location with --derivatives DIR"
        )
    return found


def read_run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())
