"""Waiting on a real Airflow from a test: poll until a check gives a value, else fail with Airflow's log tail."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import requests

T = TypeVar("T")


def until(what: str, check: Callable[[], T], timeout: float, log_file: Path) -> T:
    """`check()`'s first truthy value within `timeout` seconds (a busy API server on SQLite may answer late or
    not at all: a request error counts as not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            value = check()
            if value:
                return value
        time.sleep(1)
    pytest.fail(f"{what} not within {timeout:.0f} s; Airflow's log ends:\n{log_file.read_text()[-4000:]}")
