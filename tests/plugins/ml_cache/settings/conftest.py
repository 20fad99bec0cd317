"""A fresh copy of the repo's config for each test."""

from pathlib import Path

import pytest

from ml_cache.settings import load_config


@pytest.fixture
def config():
    return load_config(str(Path(__file__).resolve().parents[4] / "config" / "ml_container_cache.yaml"))
