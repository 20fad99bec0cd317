"""Reading the config file: where it is, and errors that name it."""

from pathlib import Path

import pytest
import yaml

from ml_cache.images import InvalidInputs
from ml_cache.settings import ConfigError, load_config, resolve_build_settings
from ml_cache.settings.config import DEFAULT_CONFIG_PATH

REPO = Path(__file__).resolve().parents[4]
REGION = "us-west-2"


def test_default_is_packaged_inside_ml_cache():
    # found through importlib.resources: an image or MWAA ships plugins/ml_cache whole, config included
    assert DEFAULT_CONFIG_PATH == REPO / "plugins" / "ml_cache" / "defaults" / "ml_container_cache.yaml"
    assert DEFAULT_CONFIG_PATH.is_file()


def test_load_config_reads_default_file(monkeypatch):
    monkeypatch.delenv("ML_CACHE_CONFIG", raising=False)
    config = load_config()
    assert config["pipeline"] == "ml-container-cache"
    assert config["build"]["images"]


def test_env_var_overrides_the_file(monkeypatch, tmp_path, config):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**config, "pipeline": "other-cache"}))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(other))
    assert load_config()["pipeline"] == "other-cache"
    assert load_config(str(DEFAULT_CONFIG_PATH))["pipeline"] == "ml-container-cache"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize(
    "text",
    [
        "build: [unclosed\n",
        "- a list\n",
        "",
        "!!python/object/apply:os.system ['id']\n",  # safe_load refuses to run code
    ],
)
def test_invalid_file_is_named(tmp_path, text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(str(bad))


def test_config_error_is_an_invalid_input():
    assert issubclass(ConfigError, InvalidInputs)


def test_a_config_without_sections_names_what_is_missing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("aws: {}\nbuild: {}\n")
    with pytest.raises(InvalidInputs, match=r"pipeline.*aws\.instance_profile.*build\.allowed_registries"):
        resolve_build_settings(load_config(str(bad)), {}, region=REGION)


def test_the_shipped_config_holds_no_value_equal_to_a_default(config):
    """A default lives in the schema only: the file names what a site chooses."""
    from ml_cache.settings.models import AwsConfig, BuildConfig, RolloutConfig, Timeouts

    for section, model in (("aws", AwsConfig), ("build", BuildConfig), ("rollout", RolloutConfig),
                           ("timeouts", Timeouts)):
        for key, value in (config.get(section) or {}).items():
            default = model.model_fields[key].default
            assert value != default, f"{section}.{key} repeats the schema's default {default!r}"
