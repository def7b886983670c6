"""The cohort table: a BIDS dataset + ``participants.tsv`` → one row per T1w image.

Which column holds the group and which values are background (controls) or target (patients) is
configuration, never hard-coded (defaults match ``neurosepclr simulate``: ``diagnosis``, ``CN``,
``PT``). Every problem in the table is collected and reported at once, naming rows and subjects:
duplicate or malformed IDs, unknown group values, rows without image, images without row, paths
escaping the dataset root. ``participant_id`` is always read as a string (``001`` ≠ ``1``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from neurosepclr.errors import InputDataError, MissingInputError

log = logging.getLogger("neurosepclr")

ID_PATTERN = re.compile(r"^sub-[A-Za-z0-9]+$")
SESSION_PATTERN = re.compile(r"^ses-[A-Za-z0-9]+$")
BACKGROUND = "background"
TARGET = "target"
MAX_TABLE_BYTES = 50_000_000


@dataclass(frozen=True)
class GroupMapping:
    """Which participants.tsv column holds the group, and which values mean background/target."""

    column: str = "diagnosis"
    background: tuple[str, ...] = ("CN",)
    target: tuple[str, ...] = ("PT",)
    exclude: tuple[str, ...] = ()  # values whose participants are left out

    def __post_init__(self) -> None:
        overlap = set(self.background) & set(self.target)
        if overlap:
            raise InputDataError(f"group values both background and target: {', '.join(sorted(overlap))}")

    @classmethod
    def from_config(cls, data) -> GroupMapping:
        """The mapping of a :class:`~neurosepclr.config.DataConfig`."""
        return cls(data.group_column, tuple(data.background), tuple(data.target), tuple(data.exclude))


def _unmapped_groups(ids: pd.Series, values: pd.Series, mapping: GroupMapping) -> str | None:
    """One line listing the group values that are neither background, target nor excluded, with
    how many participants hold each and how to map or leave them out; None when all are mapped."""
    known = set(mapping.background) | set(mapping.target) | set(mapping.exclude)
    shown = values.map(lambda v: "n/a (missing)" if pd.isna(v) else repr(v))
    unmapped = ~values.map(lambda v: not pd.isna(v) and v in known).astype(bool)
    if not unmapped.any():
        return None
    found = []
    for value, who in ids[unmapped].groupby(shown[unmapped], sort=True):
        first = ", ".join(who.iloc[:3]) + (", …" if len(who) > 3 else "")
        found.append(f"{value} ({len(who)}: {first})")
    return (
        f"{mapping.column} values that are neither background ({', '.join(mapping.background)}) nor "
        f"target ({', '.join(mapping.target)}): {'; '.join(found)}; map them with --background/--target "
        "(data.background, data.target) or leave them out with --exclude (data.exclude)"
    )


def _summarise(problems: list[str], source: str, limit: int = 8) -> str:
    shown = "; ".join(problems[:limit])
    more = f"; … and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{source}: {len(problems)} problem(s): {shown}{more}"


def read_participants(path: Path) -> pd.DataFrame:
    """Read ``participants.tsv`` strictly: UTF-8 (a BOM is accepted), tab-separated, rectangular,
    unique column names, every value kept as a string (``n/a`` → missing)."""
    if not path.is_file():
        raise MissingInputError(
            f"{path.name}: not found in {path.parent}; a BIDS dataset needs one (tab-separated, columns "
            "participant_id and the group column, diagnosis by default): see docs/data.md"
        )
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise InputDataError(f"{path.name}: larger than {MAX_TABLE_BYTES} bytes")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputDataError(
            f"{path.name}: line {line} is not UTF-8 text (re-save the file as UTF-8)"
        ) from None
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    rows = [[cell.strip() for cell in row] for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputDataError(f"{path.name}: empty file")
    header = rows[0]
    problems = []
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        problems.append(f"duplicate column(s) {', '.join(duplicated)}")
    if "participant_id" not in header:
        problems.append(f"no participant_id column (columns: {', '.join(header)})")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            problems.append(f"line {number} has {len(row)} fields, the header has {len(header)}")
    if problems:
        raise InputDataError(_summarise(problems, path.name))
    frame = pd.DataFrame(rows[1:], columns=header, dtype=str)
    return frame.replace({"n/a": pd.NA, "": pd.NA})


@dataclass(frozen=True)
class CohortTable:
    """One row per image: participant_id, session_id, path (dataset-relative), group, covariates."""

    root: Path
    frame: pd.DataFrame
    mapping: GroupMapping

    def __len__(self) -> int:
        return len(self.frame)


def _find_images(root: Path) -> dict[tuple[str, str], list[Path]]:
    images: dict[tuple[str, str], list[Path]] = {}
    for pattern in ("sub-*/anat/sub-*_T1w.nii*", "sub-*/ses-*/anat/sub-*_T1w.nii*"):
        for path in root.glob(pattern):
            if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
                continue
            parts = path.relative_to(root).parts
            session = parts[1] if len(parts) == 4 else "n/a"
            images.setdefault((parts[0], session), []).append(path)
    return images


def build_cohort(
    root: str | Path,
    mapping: GroupMapping = GroupMapping(),
    participant_labels: list[str] | None = None,
) -> CohortTable:
    """The cohort table of a BIDS dataset, with every problem reported at once (exit 65/66)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"BIDS dataset not found: {root}")
    root_resolved = root.resolve()
    participants = read_participants(root / "participants.tsv")
    problems: list[str] = []
    if mapping.column not in participants.columns:
        raise InputDataError(
            f"participants.tsv: no group column '{mapping.column}' "
            f"(columns: {', '.join(participants.columns)}); set it with --group-column"
        )
    ids = participants["participant_id"].fillna("")
    for number, pid in enumerate(ids, start=2):
        if not ID_PATTERN.match(pid):
            problems.append(f"line {number}: participant_id {pid!r} is not a BIDS label like sub-01")
    for pid in sorted(set(ids[ids.duplicated()])):
        lines = [str(i + 2) for i in ids.index[ids == pid]]
        problems.append(f"lines {', '.join(lines)}: duplicate participant_id {pid}")
    unmapped = _unmapped_groups(ids, participants[mapping.column], mapping)
    if unmapped:
        problems.append(unmapped)
    left_out = set(ids[participants[mapping.column].isin(mapping.exclude)])
    if left_out:
        log.info("leaving out %d participant(s) with %s in data.exclude", len(left_out), mapping.column)

    if participant_labels:
        wanted = {label if label.startswith("sub-") else f"sub-{label}" for label in participant_labels}
        missing = sorted(wanted - set(ids))
        if missing:
            problems.append(f"--participant-label not in participants.tsv: {', '.join(missing)}")
        wanted -= left_out
    else:
        wanted = set(ids) - left_out

    images = _find_images(root)
    rows = []
    listed = set(ids)
    for (pid, session), paths in sorted(images.items()):
        if pid not in listed:
            problems.append(
                f"{paths[0].relative_to(root)}: image of {pid}, who has no row in participants.tsv"
            )
            continue
        if pid not in wanted:
            continue
        if len(paths) > 1:
            names = ", ".join(str(p.relative_to(root)) for p in sorted(paths))
            problems.append(f"{pid}: several T1w images ({names}); keep one per session")
            continue
        path = paths[0]
        if not path.resolve().is_relative_to(root_resolved):
            problems.append(f"{pid}: {path.relative_to(root)} points outside the dataset")
            continue
        rows.append({"participant_id": pid, "session_id": session, "path": path.relative_to(root).as_posix()})
    with_image = {r["participant_id"] for r in rows}
    for pid in sorted(wanted & listed - with_image):
        if not any(p.startswith(f"{pid}:") or f"{pid}/" in p for p in problems):
            problems.append(f"{pid}: no T1w image found (expected {pid}/[ses-*/]anat/{pid}_*T1w.nii[.gz])")
    if problems:
        raise InputDataError(_summarise(problems, "participants.tsv"))

    table = pd.DataFrame(rows).merge(participants, on="participant_id", how="left")
    groups = table[mapping.column].map(lambda v: BACKGROUND if v in mapping.background else TARGET)
    if mapping.column == "group":  # keep the user's own labels beside ours
        table = table.rename(columns={"group": "group_label"})
    table["group"] = groups
    first = ["participant_id", "session_id", "path", "group"]
    table = table[first + [c for c in table.columns if c not in first]]
    return CohortTable(root, table.reset_index(drop=True), mapping)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N), with 0 ≤ I < N; a clear usage error otherwise."""
    from neurosepclr.errors import UsageError

    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        shard = (-1, 0)
    if not 0 <= shard[0] < shard[1]:
        raise UsageError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. 0/10")
    return shard


def select_shard(cohort: CohortTable, index: int, count: int) -> CohortTable:
    """The participants of shard ``index`` of ``count``: sorted IDs, every ``count``-th from the
    ``index``-th (all sessions of a participant in one shard; shards of one cohort never overlap)."""
    ids = sorted(cohort.frame["participant_id"].unique())
    chosen = set(ids[index::count])
    frame = cohort.frame[cohort.frame["participant_id"].isin(chosen)].reset_index(drop=True)
    return CohortTable(cohort.root, frame, cohort.mapping)
