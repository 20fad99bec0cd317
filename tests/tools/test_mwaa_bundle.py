"""The MWAA bundle, checked offline: what plugins.zip holds, that `ml_cache` imports from the
unzipped bundle alone (a fresh interpreter, the repo off sys.path) and finds its data there, the
requirements' constraints line, and the startup script."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tools.mwaa_bundle import MWAA_PLUGINS, build, main
from tools.pins import CONSTRAINTS, REPO, RUNTIME, canonical, pins, requirement_lines

# what a fresh interpreter does with the unzipped bundle: import every ml_cache module, read the data
IMPORT_CHECK = textwrap.dedent("""
    import importlib.util, json, os, pkgutil, sys
    bundle, repo = sys.argv[1], sys.argv[2]
    assert repo not in sys.path and f"{repo}/plugins" not in sys.path, sys.path
    assert importlib.util.find_spec("ml_cache") is None, "ml_cache importable without the bundle"
    sys.path.insert(0, bundle)
    import ml_cache
    modules = sorted(info.name for info in pkgutil.walk_packages(ml_cache.__path__, "ml_cache."))
    for name in modules:
        __import__(name)
    # a namespace package (scripts/) has no __file__: its __path__ says where it came from
    loaded = {name: module.__file__ or next(iter(getattr(module, "__path__", [])), "")
              for name, module in sys.modules.items() if name.startswith("ml_cache")}
    from ml_cache.builder_spec import SCHEMA_PATH
    from ml_cache.hooks._waiters import WAITERS_DIR
    from ml_cache.settings import load_config
    from ml_cache.settings.config import config_path
    from ml_cache.ssm_document import shipped_files
    from ml_cache.validation.manifest import validation_pod_manifest
    pod = validation_pod_manifest(namespace="ml-cache", image="x:1", node_name="n1", active_deadline_seconds=60)
    print(json.dumps({
        "modules": modules,
        "outside": sorted(name for name, file in loaded.items() if not (file or "").startswith(bundle)),
        "config": str(config_path()),
        "pipeline": load_config()["pipeline"],
        "pod_node": pod["spec"]["nodeName"],
        "schema": str(SCHEMA_PATH),
        "waiters": sorted(path.name for path in WAITERS_DIR.glob("*.json")),
        "shipped": sorted(shipped_files()),
    }))
""")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("mwaa") / "dist")


@pytest.fixture(scope="module")
def members(bundle) -> list[str]:
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def airflow_home(bundle, tmp_path_factory) -> Path:
    """An MWAA-like $AIRFLOW_HOME: plugins.zip unzipped into plugins/."""
    home = tmp_path_factory.mktemp("airflow-home")
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(home / "plugins")
    return home


def run_isolated(airflow_home: Path, extra_env: dict[str, str] | None = None, shell_prefix: str = "") -> dict:
    """The import check in `python -I` (no PYTHONPATH, no cwd, no user site), from a neutral cwd."""
    env = {"PATH": os.environ["PATH"], "AIRFLOW_HOME": str(airflow_home), "HOME": str(airflow_home),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", **(extra_env or {})}
    command = [sys.executable, "-I", "-c", IMPORT_CHECK, str(airflow_home / "plugins"), str(REPO)]
    if shell_prefix:
        command = ["bash", "-c", f'{shell_prefix} && exec "$@"', "bash", *command]
    result = subprocess.run(command, cwd=airflow_home, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_make_target_and_cli_build_the_same_files(tmp_path, capsys):
    assert "$(PYTHON) -m tools.mwaa_bundle --out dist/mwaa" in (REPO / "Makefile").read_text()
    assert main(["--out", str(tmp_path / "out")]) == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == \
        ["dags", "plugins.zip", "requirements.txt", "startup.sh"]
    assert "MWAA bundle in" in capsys.readouterr().out


def test_zip_holds_the_package_with_its_data_at_the_top(members):
    tracked = subprocess.run(["git", "ls-files", "plugins"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    expected = {path.removeprefix("plugins/") for path in tracked} | {"constraints.txt"}
    assert set(members) == expected
    assert len(members) == len(set(members))
    for data in ("ml_cache/defaults/ml_container_cache.yaml", "ml_cache/defaults/validation-pod.yaml",
                 "ml_cache/scripts/build_spec.schema.json", "ml_cache/scripts/build_cache.sh",
                 "ml_cache/waiters/ec2.json", ".airflowignore", "ml_cache/__init__.py"):
        assert data in members
    assert not any("__pycache__" in name or name.endswith(".pyc") or name.startswith("plugins/") for name in members)


def test_zip_keeps_the_scripts_executable_and_is_reproducible(bundle, tmp_path):
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        mode = archive.getinfo("ml_cache/scripts/build_cache.sh").external_attr >> 16
        assert mode & stat.S_IXUSR
        assert archive.read("constraints.txt") == CONSTRAINTS.read_bytes()
    again = build(tmp_path / "again")
    assert (again / "plugins.zip").read_bytes() == (bundle / "plugins.zip").read_bytes()


def test_ml_cache_imports_from_the_unzipped_bundle_alone(airflow_home):
    found = run_isolated(airflow_home)
    plugins = str(airflow_home / "plugins")
    assert found["outside"] == []
    for module in ("ml_cache.settings.config", "ml_cache.validation.manifest", "ml_cache.hooks.registry",
                   "ml_cache.triggers.ssm", "ml_cache.operators.builder", "ml_cache.steps.build"):
        assert module in found["modules"]
    # the packaged defaults are found inside the bundle, with no ML_CACHE_CONFIG
    assert found["config"] == f"{plugins}/ml_cache/defaults/ml_container_cache.yaml"
    assert found["pipeline"] == "ml-container-cache"
    assert found["pod_node"] == "n1"
    assert found["schema"].startswith(plugins)
    assert found["waiters"] == ["ec2.json", "eks.json", "ssm.json"]
    assert "build_cache.sh" in found["shipped"]


def test_an_explicit_ml_cache_config_still_wins(airflow_home, tmp_path):
    other = tmp_path / "site.yaml"
    packaged = airflow_home / "plugins" / "ml_cache" / "defaults" / "ml_container_cache.yaml"
    other.write_text(packaged.read_text().replace("pipeline: ml-container-cache", "pipeline: other-cache", 1))
    found = run_isolated(airflow_home, {"ML_CACHE_CONFIG": str(other)})
    assert (found["config"], found["pipeline"]) == (str(other), "other-cache")


def test_startup_script_points_at_the_config_in_the_bundle(bundle, airflow_home):
    found = run_isolated(airflow_home, shell_prefix=f'source "{bundle / "startup.sh"}"')
    assert found["config"] == str(airflow_home / "plugins/ml_cache/defaults/ml_container_cache.yaml")
    # without AIRFLOW_HOME it names MWAA's own plugins folder
    result = subprocess.run(["bash", "-c", f'unset AIRFLOW_HOME; source "{bundle / "startup.sh"}" 2>/dev/null; '
                             'echo "$ML_CACHE_CONFIG"'], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"{MWAA_PLUGINS}/ml_cache/defaults/ml_container_cache.yaml"


def test_startup_script_passes_shellcheck(bundle):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(bundle / "startup.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_requirements_constrain_with_the_bundled_file(bundle, members):
    lines = requirement_lines(bundle / "requirements.txt")
    constraint, *pinned = lines
    option, _, quoted = constraint.partition(" ")
    assert option == "--constraint"
    path = PurePosixPath(quoted.strip('"'))
    assert path.parent == MWAA_PLUGINS and path.name in members  # unzipped there by MWAA
    runtime = pins(RUNTIME)
    # MWAA installs Airflow itself; everything else we need is pinned as in requirements.txt
    assert {canonical(line.split("==")[0]) for line in pinned} == set(runtime) - {"apache-airflow"}
    assert all(runtime[canonical(line.split("==")[0])] == line.split("==")[1] for line in pinned)
    assert pins(CONSTRAINTS)["apache-airflow"] == runtime["apache-airflow"]
    assert not any(line.startswith(("--index-url", "--extra-index-url", "-e ")) for line in pinned)


def test_dags_are_the_repo_dags(bundle):
    assert sorted(path.name for path in (bundle / "dags").iterdir()) == \
        sorted(path.name for path in (REPO / "dags").glob("*.py"))
    for dag in (bundle / "dags").iterdir():
        assert dag.read_bytes() == (REPO / "dags" / dag.name).read_bytes()
