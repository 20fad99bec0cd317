"""The version-controlled config file: where it is and how it is read (shape checked by the models).

It ships inside the package (plugins/ml_cache/defaults/), found through importlib.resources, so
an image or MWAA that copies only plugins/ and dags/ has it; $ML_CACHE_CONFIG still wins.
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from ml_cache.images import InvalidInputs

CONFIG_ENV = "ML_CACHE_CONFIG"
DEFAULT_CONFIG_PATH: Traversable = files("ml_cache") / "defaults" / "ml_container_cache.yaml"


class ConfigError(InvalidInputs):
    """The configuration file is missing or not the YAML mapping we expect."""


def config_path() -> Path | Traversable:
    """The file to read: $ML_CACHE_CONFIG if set, else the packaged defaults/ml_container_cache.yaml."""
    override = os.environ.get(CONFIG_ENV)
    return Path(override) if override else DEFAULT_CONFIG_PATH


def load_config(path: str | None = None) -> dict:
    """Read the YAML config (safe_load); errors name the file. The models validate its content."""
    file = Path(path) if path is not None else config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read ML cache config {str(file)!r}: {error.strerror or error}") from error
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"ML cache config {str(file)!r} is not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise ConfigError(f"ML cache config {str(file)!r} must be a YAML mapping, got {type(config).__name__}")
    return config
