"""A fresh copy of the repo's config for each test, with the private subnet a site must set."""

from pathlib import Path

import pytest

from ml_cache.settings import load_config


@pytest.fixture
def config():
    config = load_config(str(Path(__file__).resolve().parents[4] / "plugins/ml_cache/defaults/ml_container_cache.yaml"))
    config["aws"]["subnet_ids"] = ["subnet-0123456789abcdef0"]
    return config
