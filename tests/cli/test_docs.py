"""The documentation that is generated from the code is up to date."""

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_cli_reference_matches_the_parser():
    spec = importlib.util.spec_from_file_location("make_cli_reference", DOCS / "make_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "cli.md").read_text() == module.reference(), "run: python docs/make_cli_reference.py"


def test_docs_link_to_files_that_exist():
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        for target in {part.split(")")[0] for part in text.split("](")[1:]}:
            if target.startswith(("http", "#")) or not target:
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name} links to missing {target}"
