"""Errors a user can act on, each mapped to a sysexits exit code (see docs/cli.md).

Raise one of these with a one-line message naming the subject and the dataset-relative path when
there is one; the command line prints ``neurosepclr: error: <message>`` and exits with the code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of ``neurosepclr`` (BSD sysexits.h)."""

    OK = 0
    USAGE = 64
    DATA = 65
    NO_INPUT = 66
    UNAVAILABLE = 69
    SOFTWARE = 70
    CANT_CREATE = 73
    IO = 74
    TEMP_FAIL = 75
    CONFIG = 78


class NeurosepclrError(Exception):
    """Base class: an error with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.SOFTWARE


class UsageError(NeurosepclrError):
    """Wrong command-line usage (bad option, missing argument)."""

    exit_code = ExitCode.USAGE


class InputDataError(NeurosepclrError):
    """Input data exist but are invalid (corrupt image, bad participants.tsv row)."""

    exit_code = ExitCode.DATA


class MissingInputError(NeurosepclrError):
    """An input file or folder does not exist or cannot be opened."""

    exit_code = ExitCode.NO_INPUT


class OutputError(NeurosepclrError):
    """An output file or folder cannot be created."""

    exit_code = ExitCode.CANT_CREATE


class IOFailure(NeurosepclrError):
    """Reading or writing failed part-way (disk full, truncated write)."""

    exit_code = ExitCode.IO


class TemporaryFailure(NeurosepclrError):
    """A failure that may pass on retry (out of memory, a worker killed)."""

    exit_code = ExitCode.TEMP_FAIL


class ConfigError(NeurosepclrError):
    """Invalid configuration: unknown key, wrong type, out-of-range value, unsafe YAML."""

    exit_code = ExitCode.CONFIG


class MissingDependencyError(NeurosepclrError):
    """An optional dependency a command needs is not installed."""

    exit_code = ExitCode.UNAVAILABLE


def require(module: str, extra: str, purpose: str) -> None:
    """Fail early, before anything is written, when optional ``module`` is not installed; the
    message names the extra that installs it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package, which is not installed; "
            f"install it with: pip install 'neurosepclr[{extra}]'"
        )
