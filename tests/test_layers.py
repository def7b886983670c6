"""Dependencies point one way: cli → pipeline → analysis → training → models/objectives/shared
maths → data/atlases/run folder → config/io/errors. A module may import its own layer or lower
ones, never a higher one, at module level or inside a function (scikit-learn and nilearn keep
such contracts with the same kind of test)."""

from __future__ import annotations

import ast
from pathlib import Path

import neurosepclr

PACKAGE = Path(neurosepclr.__file__).parent

LAYERS = {  # module (or package) → layer; the most specific prefix wins
    "neurosepclr": 0,
    "neurosepclr.errors": 0,
    "neurosepclr.io": 0,
    "neurosepclr.config": 0,
    "neurosepclr.hardware": 0,
    "neurosepclr.data": 1,
    "neurosepclr.atlases": 1,
    "neurosepclr.runfolder": 1,
    "neurosepclr.compute": 2,
    "neurosepclr.probes": 2,
    "neurosepclr.clustering": 2,
    "neurosepclr.models": 2,
    "neurosepclr.objectives": 2,
    "neurosepclr.training": 3,
    "neurosepclr.analysis": 4,
    "neurosepclr.pipeline": 5,
    "neurosepclr.cli": 6,
    "neurosepclr.__main__": 6,
}
# Inside the data layer the simulator sits above preprocessing: preprocessing real data must not
# depend on how the simulated cohorts are made.
FORBIDDEN = {("neurosepclr.data.preprocess", "neurosepclr.data.simulate")}


def layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer in tests/test_layers.py")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """Every neurosepclr module imported anywhere in the file, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("neurosepclr"):
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("neurosepclr")]
    return found


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported, line in imports(path):
            if layer(imported) > layer(importer) or (importer, imported) in FORBIDDEN:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} → {imported}")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_the_layering_check_catches_a_violation(tmp_path):
    bad = tmp_path / "neurosepclr" / "training" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from neurosepclr.analysis.subtype import subtype\n")
    (found,) = imports(bad)
    assert found == ("neurosepclr.analysis.subtype", 2)
    assert layer(found[0]) > layer("neurosepclr.training.bad")


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer(module_name(path))
