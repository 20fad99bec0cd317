"""The pinned requirement files, read one way: the Dockerfile test, the MWAA bundle and the
requirements tests all ask this module which distribution is pinned where."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "requirements.txt"
DEV = REPO / "requirements-dev.txt"
CONSTRAINTS = REPO / "constraints.txt"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;#]+)$")


def canonical(name: str) -> str:
    """PEP 503 name: `PyYAML`, `pyyaml` and `py_yaml` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements or constraints file; anything but `name==version`
    (an unpinned line, an option, a URL) is an error, so no file drifts from the frozen style."""
    found: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{path.name}:{number}: not a `name==version` pin: {raw!r}")
        found[canonical(match["name"])] = match["version"]
    return found


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines as written (extras kept), without comments and blank lines."""
    return [line for raw in path.read_text().splitlines() if (line := raw.split("#", 1)[0].strip())]


def airflow_version() -> str:
    """The Airflow release everything is pinned to (the Docker image and MWAA follow it)."""
    return pins(RUNTIME)["apache-airflow"]
