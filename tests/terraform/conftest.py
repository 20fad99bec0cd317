"""Fixtures for the Terraform tests: a working copy of terraform/ and the local cloud."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tf_runner import REPO

SERVER_SCRIPT = Path(__file__).with_name("local_cloud_server.py")


@dataclass(frozen=True)
class LocalCloud:
    endpoint: str
    kind: str  # "devstack" or "moto"


@pytest.fixture(scope="module")
def local_cloud() -> Iterator[LocalCloud]:
    """A local cloud server in a child process, stopped (by its own PID) after the module."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "plugins")]))
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            pytest.fail(f"local cloud server exited early with {process.wait(timeout=10)}")
        kind, endpoint = line.split()
        yield LocalCloud(endpoint=endpoint, kind=kind)
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
