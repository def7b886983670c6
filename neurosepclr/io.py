"""Small, safe file-writing helpers shared by every command.

Outputs are written to a temporary file in the destination folder, flushed to disk and renamed
into place, so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from neurosepclr.errors import IOFailure, OutputError

FILE_MODE = 0o644


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename) with permissions ``mode``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except OSError as exc:  # disk full, quota, vanished folder: the previous file (if any) is intact
        Path(tmp_name).unlink(missing_ok=True)
        raise IOFailure(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, mode: int = FILE_MODE) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def attach_log_file(folder: str | Path, command: str) -> Path:
    """Also log the ``neurosepclr`` logger to ``folder/logs/<command>_<UTC time>.log``; returns the path."""
    logs = Path(folder) / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {logs}: {exc.strerror or exc}") from None
    path = logs / f"{command}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("neurosepclr")
    logger.addHandler(handler)
    if logger.level > logging.INFO or logger.level == logging.NOTSET:
        handler.setLevel(logging.INFO)
    return path


def nifti_gz_bytes(img) -> bytes:
    """Deterministic ``.nii.gz`` bytes of a nibabel image (gzip header without timestamp or name)."""
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def tsv_text(frame) -> str:
    """A pandas table as BIDS TSV text: tab-separated, ``n/a`` for missing, LF line ends."""
    return frame.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n")
