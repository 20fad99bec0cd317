"""The trigger form is generated from the models: its limits are the models' limits."""

import re

import pytest
import yaml
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from ml_cache.images import InvalidInputs
from ml_cache.settings import resolve_build_settings
from ml_cache.settings.models import DEFAULT_ARM64_INSTANCE_TYPES
from ml_cache.settings.params import build_params, markdown_text, rollout_params
from ml_cache.settings.resolve import BUILD_FORM_FIELDS, ROLLOUT_FORM_FIELDS, overrides, resolve_rollout_settings

REGION = "us-west-2"


def described(param: Param) -> str:
    """The description as the form shows it: plain, or the Markdown one's text (escapes undone)."""
    return param.description or re.sub(r"\\(.)", r"\1", param.schema["description_md"])


def test_the_forms_have_one_field_per_overridable_setting():
    assert sorted(build_params()) == sorted(BUILD_FORM_FIELDS)
    assert sorted(rollout_params()) == sorted(ROLLOUT_FORM_FIELDS)


def test_the_build_form_has_its_sections_in_order():
    sections = [param.schema["section"] for param in build_params().values()]
    assert list(dict.fromkeys(sections)) == ["Images", "Builder", "Volume", "FSR"]
    assert {param.schema["section"] for param in rollout_params().values()} == {"Rollout"}


@pytest.mark.parametrize("param", [*build_params().values(), *rollout_params().values()])
def test_every_field_has_a_title_and_an_explicit_null_is_the_config_but_never_a_choice(param: Param):
    assert param.schema["title"] and described(param)
    if "enum" in param.schema:
        assert None not in param.schema["enum"]
        with pytest.raises(ParamValidationError):
            param.resolve(None)
    else:
        assert param.resolve(None) is None  # an API caller's null: the config's value


def test_fields_show_the_configured_values(tmp_path, monkeypatch, config):
    config["build"].update({"images": ["nvcr.io/nvidia/pytorch:24.08-py3"], "enable_fast_snapshot_restore": False,
                            "architecture": "arm64"})
    config["rollout"]["max_startup_seconds"] = 30
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(tmp_path / "config.yaml"))
    build, rollout = build_params(), rollout_params()
    assert build["images"].value == ["nvcr.io/nvidia/pytorch:24.08-py3"]
    assert build["enable_fast_snapshot_restore"].value is False
    assert build["instance_types"].value == DEFAULT_ARM64_INSTANCE_TYPES  # what an arm64 run uses
    assert build["volume_iops"].value == 3000  # the schema's default where the config sets none
    assert build["volume_size_gib"].value is None and "Empty: computed" in described(build["volume_size_gib"])
    assert rollout["max_startup_seconds"].value == 30
    assert "public.ecr.aws, nvcr.io" in described(build["images"])  # the allow-list, for context


def test_a_config_that_does_not_validate_leaves_the_fields_empty_and_says_why(tmp_path, monkeypatch, config):
    config["build"]["images"] = ["busybox;rm -rf /"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(tmp_path / "config.yaml"))
    images = build_params()["images"]
    assert images.value is None
    assert "could not be shown" in described(images) and "character ';'" in described(images)
    monkeypatch.setenv("ML_CACHE_CONFIG", str(tmp_path / "missing.yaml"))
    assert "cannot read the config file" in described(build_params()["architecture"])


def test_the_forms_defaults_submitted_as_they_are_validate_like_the_config(tmp_path, monkeypatch, config):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(tmp_path / "config.yaml"))
    submitted = {name: param.value for name, param in build_params().items()}  # what the UI sends untouched
    from_form = resolve_build_settings(config, submitted, region=REGION, conf=submitted)
    assert from_form == resolve_build_settings(config, {}, region=REGION, conf={})
    rollout = {name: param.value for name, param in rollout_params().items()}
    assert resolve_rollout_settings(config, rollout, region=REGION, conf=rollout) == \
        resolve_rollout_settings(config, {}, region=REGION, conf={})


def test_an_unsubmitted_default_yields_to_the_config_read_at_run_time(config):
    """A form parsed before the config changed: its default is no override unless submitted."""
    stale = {"images": ["public.ecr.aws/docker/library/busybox:1.36"]}
    config["build"]["images"] = ["public.ecr.aws/docker/library/busybox:1.37"]
    assert overrides(stale, {}, stale) == {}
    assert overrides(stale, stale, stale) == stale  # submitted: the user saw and sent it
    assert overrides({"images": ["x"]}, {}, stale) == {"images": ["x"]}  # changed from the default
    assert overrides({"images": None}, {"images": None}, stale) == {}  # an explicit null: the config's value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("volume_iops", 2999),
        ("volume_size_gib", 16385),
        ("pull_parallelism", 17),
        ("kubernetes_version", "v1.33"),
        ("architecture", "amd64"),
        ("instance_types", ["C6i.2xlarge"]),
        ("snapshot_description", "x" * 256),
    ],
)
def test_form_and_settings_refuse_the_same_values(config, name, value):
    with pytest.raises(ParamValidationError):
        build_params()[name].resolve(value)
    with pytest.raises(InvalidInputs, match=name):
        resolve_build_settings(config, {name: value}, region=REGION)


@pytest.mark.parametrize(("name", "value"), [("volume_iops", 3000), ("kubernetes_version", "1.34"),
                                             ("architecture", "arm64"), ("images", ["busybox:1"])])
def test_form_accepts_what_settings_accept(config, name, value):
    assert build_params()[name].resolve(value) == value
    resolve_build_settings(config, {name: value}, region=REGION)


def test_rollout_form_checks_the_snapshot_id():
    with pytest.raises(ParamValidationError):
        rollout_params()["snapshot_id"].resolve("vol-0123")
    assert rollout_params()["snapshot_id"].resolve("snap-0123456789abcdef0") == "snap-0123456789abcdef0"


def test_the_images_field_shows_the_published_set_as_the_plugin_serves_it():
    """Fetched by the browser when the form opens (a Markdown image, relative to the UI's base): the DAG file reads
    no AWS. The plain text around it still reads as written once rendered."""
    markdown = build_params()["images"].schema["description_md"]
    assert "![The published image set](ml-cache/published.svg)" in markdown
    assert build_params()["images"].description is None  # else the form would show the plain one instead
    assert markdown_text("a_b *c* [d](e) x.y") == "a\\_b \\*c\\* \\[d\\]\\(e\\) x\\.y"
