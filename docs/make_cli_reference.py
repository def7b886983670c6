"""Write docs/cli.md from the parser's own --help texts (tests/cli checks it is up to date).

python docs/make_cli_reference.py
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from neurosepclr.cli import COMMANDS, build_parser

HEADER = """# Command-line reference

Generated from `neurosepclr --help` by `python docs/make_cli_reference.py`; do not edit by hand.
Exit codes are explained in [troubleshooting.md](troubleshooting.md).
"""


def help_text(argv: list[str]) -> str:
    buffer = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it so the file is reproducible
    try:
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            build_parser().parse_args([*argv, "--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return buffer.getvalue().rstrip()


def reference() -> str:
    parts = [HEADER, "## neurosepclr\n", "```text", help_text([]), "```\n"]
    for name in COMMANDS:
        parts += [f"## neurosepclr {name}\n", "```text", help_text([name]), "```\n"]
    return "\n".join(parts)


if __name__ == "__main__":
    path = Path(__file__).with_name("cli.md")
    path.write_text(reference())
    print(path)
