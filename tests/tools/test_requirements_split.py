"""requirements.txt is the runtime set (what an Airflow worker imports), requirements-dev.txt the
rest, and constraints.txt the one frozen set both are installed with."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tools.pins import CONSTRAINTS, DEV, REPO, RUNTIME, canonical, pins

# scripts/ run on the builder with the standard library only; they are not worker imports
RUNTIME_SOURCES = [REPO / "dags", REPO / "plugins" / "ml_cache"]
BUILDER_SCRIPTS = REPO / "plugins" / "ml_cache" / "scripts"
DEV_ONLY = {"moto", "pytest", "ruff", "kubernetes-validate", "checkov"}


def top_level_imports(paths: list[Path], exclude: Path) -> dict[str, Path]:
    """{top-level module: first file importing it} for absolute imports under paths."""
    found: dict[str, Path] = {}
    for base in paths:
        for file in sorted(base.rglob("*.py")):
            if file.is_relative_to(exclude):
                continue
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.partition(".")[0], file)
    return found


def third_party(imports: dict[str, Path]) -> dict[str, Path]:
    return {name: file for name, file in imports.items()
            if name not in sys.stdlib_module_names and name != "ml_cache"}


def test_every_runtime_import_is_a_direct_runtime_requirement():
    runtime = set(pins(RUNTIME))
    providers = packages_distributions()
    imports = third_party(top_level_imports(RUNTIME_SOURCES, BUILDER_SCRIPTS))
    assert {"airflow", "yaml", "oras", "kubernetes", "botocore"} <= imports.keys()  # the scan sees them
    missing = {}
    for module, file in sorted(imports.items()):
        distributions = {canonical(name) for name in providers.get(module, [])}
        assert distributions, f"{module} (imported by {file.relative_to(REPO)}) is not installed"
        if not distributions & runtime:
            missing[module] = (str(file.relative_to(REPO)), sorted(distributions))
    assert not missing, f"imported at run time but not in requirements.txt: {missing}"


def test_builder_scripts_need_nothing_but_the_standard_library():
    imports = top_level_imports([BUILDER_SCRIPTS], exclude=REPO / "nonexistent")
    local = {path.stem for path in BUILDER_SCRIPTS.glob("*.py")}
    assert set(third_party(imports)) - local == set()


def test_runtime_requirements_hold_no_test_or_local_cloud_tool():
    assert not set(pins(RUNTIME)) & DEV_ONLY
    assert {"moto", "pytest", "ruff"} <= set(pins(DEV))
    assert not set(pins(RUNTIME)) & set(pins(DEV)), "a distribution pinned in both files"


@pytest.mark.parametrize("path", [RUNTIME, DEV], ids=lambda path: path.name)
def test_every_pin_is_the_frozen_one(path):
    frozen = pins(CONSTRAINTS)
    drift = {name: (version, frozen.get(name)) for name, version in pins(path).items() if frozen.get(name) != version}
    assert not drift, f"{path.name} disagrees with constraints.txt (pin, frozen): {drift}"


def test_pins_refuse_an_unpinned_line(tmp_path):
    loose = tmp_path / "requirements.txt"
    loose.write_text("apache-airflow==3.3.2\nPyYAML>=6\n")
    with pytest.raises(ValueError, match=r"requirements.txt:2: not a `name==version` pin"):
        pins(loose)


def test_makefile_installs_both_files_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.txt -r requirements-dev.txt -c constraints.txt" in makefile
