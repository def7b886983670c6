"""A simulated cohort's ground truth (``derivatives/truth/``, written by ``neurosepclr simulate``).

No model reads it; ``evaluate``, the validation probes of ``train`` (``train.truth``) and the
benchmarks score against it. Its ``group`` column holds the simulated BIDS values
(:data:`TRUTH_CONTROL` / :data:`TRUTH_PATIENT`), not the model's background/target roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pandas as pd

from neurosepclr.errors import MissingInputError
from neurosepclr.io import read_tsv

TRUTH_CONTROL = "CN"
TRUTH_PATIENT = "PT"


@dataclass(frozen=True)
class Truth:
    """A simulated cohort's truth: one row per subject, and the subtype masks (MNI)."""

    table: pd.DataFrame
    masks: dict[str, nib.Nifti1Image]
    regions: dict[str, list[str]]


def load_truth(path: str | Path) -> Truth:
    """Read ``derivatives/truth`` (or a simulated BIDS root that holds it)."""
    path = Path(path)
    if (path / "derivatives" / "truth").is_dir():
        path = path / "derivatives" / "truth"
    for name in ("truth.tsv", "subtypes.tsv"):
        if not (path / name).is_file():
            raise MissingInputError(f"truth folder {path} has no {name} (written by neurosepclr simulate)")
    table = read_tsv(path / "truth.tsv")
    subtypes = read_tsv(path / "subtypes.tsv")
    masks = {row.subtype: nib.load(path / row.mask) for row in subtypes.itertuples()}
    regions = {row.subtype: str(row.regions).split(",") for row in subtypes.itertuples()}
    return Truth(table, masks, regions)
