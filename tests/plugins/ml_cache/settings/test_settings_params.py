"""The trigger form is generated from the models: its limits are the models' limits."""

import pytest
from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from ml_cache.images import InvalidInputs
from ml_cache.settings import resolve_build_settings
from ml_cache.settings.params import build_params, rollout_params
from ml_cache.settings.resolve import BUILD_FORM_FIELDS, ROLLOUT_FORM_FIELDS

REGION = "us-west-2"


def test_the_forms_have_one_field_per_overridable_setting():
    assert tuple(build_params()) == BUILD_FORM_FIELDS
    assert tuple(rollout_params()) == ROLLOUT_FORM_FIELDS


@pytest.mark.parametrize("param", [*build_params().values(), *rollout_params().values()])
def test_every_field_may_be_left_empty(param: Param):
    assert param.resolve(None) is None
    assert param.description.endswith("Empty: config default.")


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
