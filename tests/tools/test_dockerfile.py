"""The Dockerfile, read as structure (no Docker engine here): the pinned official base image,
our runtime pins installed with the constraints as the airflow user, every file the package
needs in the build context, and nothing secret."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from tools.pins import REPO, airflow_version

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, found = "", []
    for line in text.splitlines():
        if not joined and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (joined + line).strip().partition(" ")
        found.append((keyword.upper(), args.strip()))
        joined = ""
    return found


def copies(steps: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY, flags (--chown) dropped."""
    result = []
    for keyword, args in steps:
        if keyword == "COPY":
            words = [word for word in shlex.split(args) if not word.startswith("--")]
            result.append((words[:-1], words[-1]))
    return result


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, for our simple patterns: the last matching line wins, and a pattern that
    matches a parent directory matches everything under it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, body) for candidate in candidates):
            verdict = not negate
    return verdict


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_base_image_is_the_official_one_of_the_pinned_airflow(steps):
    (base,) = [args for keyword, args in steps if keyword == "FROM"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires
    assert base == f"apache/airflow:{airflow_version()}-python3.11"


def test_runtime_pins_are_installed_with_the_constraints_as_airflow(steps):
    runs = [(index, args) for index, (keyword, args) in enumerate(steps) if keyword == "RUN"]
    pip_runs = [(index, shlex.split(args)) for index, args in runs if "pip" in args]
    assert len(pip_runs) == 1, "one pip install, with the constraints"
    index, words = pip_runs[0]
    assert words[:3] == ["pip", "install", "--no-cache-dir"]
    installed = {words[at + 1] for at, word in enumerate(words) if word == "-r"}
    constrained = {words[at + 1] for at, word in enumerate(words) if word == "-c"}
    copied = {f"{destination.rstrip('/')}/{Path(source).name}"
              for sources, destination in copies(steps) for source in sources if source.endswith(".txt")}
    assert installed == {"/opt/ml-container-cache/requirements.txt"} <= copied
    assert constrained == {"/opt/ml-container-cache/constraints.txt"} <= copied
    users_before = [args for keyword, args in steps[:index] if keyword == "USER"]
    assert users_before and users_before[-1] == "airflow"
    assert not any("requirements-dev" in args for _, args in steps), "no test or local-cloud tool in the image"


def test_the_image_ends_as_airflow(steps):
    assert [args for keyword, args in steps if keyword == "USER"][-1] == "airflow"


def test_dags_and_the_whole_plugin_package_are_copied(steps):
    destinations = {tuple(sources): destination for sources, destination in copies(steps)}
    assert destinations[("dags/",)] == "/opt/airflow/dags/"
    assert destinations[("plugins/",)] == "/opt/airflow/plugins/"


def test_every_copy_source_exists_and_is_in_the_build_context(steps, ignore_patterns):
    for sources, _ in copies(steps):
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repo"
            assert not ignored(source, ignore_patterns), f"COPY {source}: excluded by .dockerignore"


def test_every_tracked_file_of_dags_and_plugins_reaches_the_image(ignore_patterns):
    tracked = subprocess.run(["git", "ls-files", "dags", "plugins"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "plugins/.airflowignore" in tracked
    assert "plugins/ml_cache/defaults/ml_container_cache.yaml" in tracked
    left_out = [path for path in tracked if ignored(path, ignore_patterns)]
    assert not left_out
    assert ignored(".venv", ignore_patterns) and ignored(".devstack/state", ignore_patterns)
    assert ignored("plugins/ml_cache/__pycache__/x.pyc", ignore_patterns)


def test_no_secret_in_the_dockerfile(steps):
    for keyword, args in steps:
        assert not SECRET_VALUE.search(args), f"{keyword} {args}"
        if keyword in {"ENV", "ARG"}:
            assert not SECRET_NAME.search(args.split("=", 1)[0]), f"{keyword} {args}: secrets come from the deployment"


def test_the_parser_sees_continuations_and_flags():
    text = "# c\nFROM x\nRUN a \\\n  b\nCOPY --chown=u:g one two /dest/\n"
    steps = instructions(text)
    assert steps == [("FROM", "x"), ("RUN", "a    b"), ("COPY", "--chown=u:g one two /dest/")]
    assert copies(steps) == [(["one", "two"], "/dest/")]
