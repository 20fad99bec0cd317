"""Config loading and the validation every run's settings pass before any AWS call."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from ml_cache import settings
from ml_cache.images import InvalidImageReference, InvalidInputs
from ml_cache.settings import (
    BUILD_PARAM_KEYS,
    ConfigError,
    estimate_volume_gib,
    load_config,
    resolve_build_settings,
)

REPO = Path(__file__).resolve().parents[3]
REGION = "us-west-2"
SHA_A = "sha256:" + "a" * 64


@pytest.fixture
def config():
    return load_config(str(REPO / "config" / "ml_container_cache.yaml"))


def resolve(config, **params):
    return resolve_build_settings(config, params, region=REGION)


def with_config(config, section, **changes):
    changed = copy.deepcopy(config)
    changed[section].update(changes)
    return changed


# ---- loading ----


def test_default_path_is_the_repo_config():
    assert settings.DEFAULT_CONFIG_PATH == REPO / "config" / "ml_container_cache.yaml"


def test_load_config_reads_default_file(monkeypatch):
    monkeypatch.delenv("ML_CACHE_CONFIG", raising=False)
    config = load_config()
    assert config["pipeline"] == "ml-container-cache"
    assert set(BUILD_PARAM_KEYS) <= set(config["build"])


def test_env_var_overrides_the_file(monkeypatch, tmp_path, config):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**config, "pipeline": "other-cache"}))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(other))
    assert load_config()["pipeline"] == "other-cache"
    assert load_config(str(REPO / "config" / "ml_container_cache.yaml"))["pipeline"] == "ml-container-cache"


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(str(missing))


@pytest.mark.parametrize(
    "text",
    [
        "build: [unclosed\n",
        "- a list\n",
        "",
        "aws: {}\nbuild: {}\n",  # no timeouts
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


# ---- defaults and merging ----


def test_repo_defaults_resolve_to_a_flat_json_dict(config):
    resolved = resolve(config)
    assert json.loads(json.dumps(resolved)) == resolved
    nested = [key for key, value in resolved.items() if isinstance(value, dict)]
    assert nested == ["registry_credentials"]  # the only mapping: registry -> secret reference
    assert resolved["images"] == ["public.ecr.aws/docker/library/busybox:1.37"]
    assert resolved["platform"] == "linux/amd64"
    assert resolved["fsr_availability_zones"] == ["us-west-2a", "us-west-2b", "us-west-2c"]
    assert resolved["build_seconds"] == 7200
    assert resolved["ssm_parameter"] == "/ml-container-cache/snapshot-id"
    assert resolved["ami_ssm_parameter"] == (
        "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
    )


def test_params_override_and_none_means_default(config):
    resolved = resolve(
        config,
        images=["busybox:1.37", f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}"],
        architecture="arm64",
        volume_size_gib=None,
        pull_parallelism=8,
        unrelated_param="ignored",
    )
    assert resolved["images"] == [
        "docker.io/library/busybox:1.37",
        f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}",
    ]
    assert resolved["platform"] == "linux/arm64"
    assert resolved["volume_size_gib"] == 100
    assert resolved["pull_parallelism"] == 8
    assert "unrelated_param" not in resolved


def test_allowed_registries_is_not_a_run_param(config):
    assert "allowed_registries" not in BUILD_PARAM_KEYS
    with pytest.raises(InvalidInputs, match="allowed_registries cannot be overridden"):
        resolve(config, allowed_registries=["*"])


def test_missing_build_key_everywhere_is_named(config):
    del config["build"]["snapshot_name"]
    with pytest.raises(InvalidInputs, match="snapshot_name"):
        resolve(config)
    assert resolve(config, snapshot_name="from-param")["snapshot_name"] == "from-param"


# ---- rejected build values ----


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"images": []}, "images is empty"),
        ({"images": "busybox"}, "must be a list"),
        ({"images": ["busybox", "busybox:latest"]}, "duplicate"),
        ({"images": ["quay.io/evil/miner"]}, r"quay\.io.*not in allowed_registries"),
        ({"architecture": "amd64"}, "architecture 'amd64'"),
        ({"architecture": "X86_64"}, "architecture"),
        ({"kubernetes_version": 1.33}, "kubernetes_version 1.33"),
        ({"kubernetes_version": "v1.33"}, "kubernetes_version"),
        ({"kubernetes_version": "1.33; id"}, "kubernetes_version"),
        ({"kubernetes_version": "1.33\n"}, "kubernetes_version"),
        ({"instance_types": []}, "instance_types must not be empty"),
        ({"instance_types": "c6i.2xlarge"}, "instance_types must be a list"),
        ({"instance_types": ["c6i.2xlarge", "c6i.2xlarge"]}, "twice"),
        ({"instance_types": ["C6i.2xlarge"]}, "C6i"),
        ({"instance_types": ["c6i"]}, "'c6i'"),
        ({"instance_types": ["c6i.2xlarge;id"]}, "instance_types entry"),
        ({"instance_types": [""]}, "instance_types entry"),
        ({"volume_size_gib": 0}, "volume_size_gib must be between 1 and 16384"),
        ({"volume_size_gib": 16385}, "volume_size_gib"),
        ({"volume_size_gib": "100"}, "volume_size_gib must be an integer"),
        ({"volume_size_gib": 100.0}, "volume_size_gib must be an integer"),
        ({"volume_size_gib": True}, "volume_size_gib must be an integer"),
        ({"volume_iops": 2999}, "volume_iops"),
        ({"volume_iops": 16001}, "volume_iops"),
        ({"volume_size_gib": 8, "volume_iops": 4001}, "500 IOPS per GiB"),
        ({"volume_throughput_mibps": 124}, "volume_throughput_mibps"),
        ({"volume_throughput_mibps": 1001}, "volume_throughput_mibps"),
        ({"volume_throughput_mibps": 751}, r"at most 750 with 3000 IOPS"),
        ({"snapshot_name": ""}, "snapshot_name"),
        ({"snapshot_name": "a" * 129}, "snapshot_name"),
        ({"snapshot_name": "cache\nname"}, "snapshot_name"),
        ({"snapshot_name": "cache$(id)"}, "snapshot_name"),
        ({"snapshot_name": " cache"}, "leading or trailing"),
        ({"snapshot_description": "x" * 256}, "snapshot_description is 256 characters"),
        ({"snapshot_description": "line1\nline2"}, "control characters"),
        ({"snapshot_description": "   "}, "snapshot_description"),
        ({"snapshot_description": 5}, "snapshot_description"),
        ({"enable_fast_snapshot_restore": "true"}, "enable_fast_snapshot_restore must be true or false"),
        ({"fsr_availability_zones": []}, "fsr_availability_zones must not be empty"),
        ({"fsr_availability_zones": [""]}, r"fsr_availability_zones entry '' is not"),
        ({"fsr_availability_zones": ["us-east-1a"]}, r"'us-east-1a' is not an availability zone of region us-west-2"),
        ({"fsr_availability_zones": ["us-west-2"]}, "fsr_availability_zones entry"),
        ({"fsr_availability_zones": ["us-west-2ab"]}, "fsr_availability_zones entry"),
        ({"fsr_availability_zones": ["us-west-2A"]}, "fsr_availability_zones entry"),
        ({"fsr_availability_zones": ["us-west-2a", "us-west-2a"]}, "twice"),
        ({"fsr_availability_zones": "us-west-2a"}, "must be a list"),
        ({"pull_parallelism": 0}, "pull_parallelism must be between 1 and 16"),
        ({"pull_parallelism": 17}, "pull_parallelism"),
    ],
)
def test_bad_build_values_are_rejected_and_named(config, params, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(config, **params)


def test_bad_image_reference_is_named(config):
    with pytest.raises(InvalidImageReference, match=r"busybox;rm -rf /"):
        resolve(config, images=["busybox;rm -rf /"])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"volume_size_gib": 1, "volume_iops": 3000, "volume_throughput_mibps": 125}, 3000),  # free baseline
        ({"volume_size_gib": 32, "volume_iops": 16000, "volume_throughput_mibps": 1000}, 16000),
        ({"volume_size_gib": 16384, "volume_iops": 4000, "volume_throughput_mibps": 1000}, 4000),
    ],
)
def test_gp3_limits_accept_the_edges(config, params, expected):
    assert resolve(config, **params)["volume_iops"] == expected


def test_fsr_disabled_allows_no_zones(config):
    resolved = resolve(config, enable_fast_snapshot_restore=False, fsr_availability_zones=[])
    assert resolved["enable_fast_snapshot_restore"] is False
    assert resolved["fsr_availability_zones"] == []


def test_fsr_zones_follow_the_region(config):
    config = with_config(config, "aws", region="eu-central-1")
    resolved = resolve_build_settings(
        config, {"fsr_availability_zones": ["eu-central-1a", "eu-central-1c"]}, region="eu-central-1"
    )
    assert resolved["fsr_availability_zones"] == ["eu-central-1a", "eu-central-1c"]
    with pytest.raises(InvalidInputs, match="us-west-2a"):
        resolve_build_settings(config, {}, region="eu-central-1")


def test_region_must_match_the_config_and_be_a_region(config):
    with pytest.raises(InvalidInputs, match="differs"):
        resolve_build_settings(config, {}, region="us-east-1")
    with pytest.raises(InvalidInputs, match="region"):
        resolve_build_settings(config, {}, region="")


# ---- aws and timeouts sections ----


def test_aws_ids_are_accepted(config):
    config = with_config(
        config,
        "aws",
        subnet_ids=["subnet-0123abcd", "subnet-0456ef01"],
        security_group_ids=["sg-0abc"],
        kms_key_id="alias/ml-cache",
    )
    resolved = resolve(config)
    assert resolved["subnet_ids"] == ["subnet-0123abcd", "subnet-0456ef01"]
    assert resolved["security_group_ids"] == ["sg-0abc"]
    assert resolved["kms_key_id"] == "alias/ml-cache"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subnet_ids": ["subnet-XYZ"]}, "subnet-XYZ"),
        ({"subnet_ids": [""]}, "aws.subnet_ids entry"),
        ({"subnet_ids": ["subnet-01", "subnet-01"]}, "twice"),
        ({"subnet_ids": "subnet-01"}, "must be a list"),
        ({"security_group_ids": ["default"]}, "'default'"),
        ({"instance_profile": "bad profile"}, "aws.instance_profile"),
        ({"instance_profile": None}, "aws.instance_profile"),
        ({"ssm_parameter": "ml-container-cache/snapshot-id"}, "aws.ssm_parameter"),
        ({"ssm_parameter": "/aws/service/x"}, "reserved"),
        ({"ssm_parameter": "/a b"}, "aws.ssm_parameter"),
        ({"ssm_parameter": "/a//b"}, "aws.ssm_parameter"),
        ({"ssm_metadata_parameter": None}, "aws.ssm_metadata_parameter"),
        ({"ssm_document": "AWS-RunShellScript"}, "reserved"),
        ({"ssm_document": "my doc"}, "aws.ssm_document"),
        ({"ssm_document": "ab"}, "aws.ssm_document"),
        ({"kms_key_id": "not a key"}, "aws.kms_key_id"),
    ],
)
def test_bad_aws_values_are_named(config, changes, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(with_config(config, "aws", **changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"build_seconds": 0}, "timeouts.build_seconds"),
        ({"build_seconds": 172801}, "timeouts.build_seconds must be between 1 and 172800"),
        ({"fsr_seconds": "4h"}, "timeouts.fsr_seconds must be an integer"),
        ({"agent_online_seconds": -1}, "timeouts.agent_online_seconds"),
        ({"region": 1}, "_seconds"),
    ],
)
def test_bad_timeouts_are_named(config, changes, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(with_config(config, "timeouts", **changes))


def test_missing_timeout_is_named(config):
    del config["timeouts"]["fsr_seconds"]
    with pytest.raises(InvalidInputs, match="fsr_seconds"):
        resolve(config)


def test_bad_pipeline_name(config):
    config["pipeline"] = "ML Cache"
    with pytest.raises(InvalidInputs, match="pipeline"):
        resolve(config)


# ---- volume estimate ----


@pytest.mark.parametrize(
    ("compressed", "unpacked", "gib"),
    [
        (0, 0, 8),
        (1, 1, 8),
        (9_500_000_000, 20_400_000_000, 37),  # the seed's PyTorch image: 29.9 GB * 1.3 = 36.2 GiB
        (10 * 1024**3, 0, 13),  # exactly 13 GiB: no rounding up past it
        (10 * 1024**3 + 1, 0, 14),
    ],
)
def test_estimate_volume_gib(compressed, unpacked, gib):
    assert estimate_volume_gib(compressed, unpacked) == gib


@pytest.mark.parametrize(("compressed", "unpacked"), [(-1, 0), (0, 1.5), ("1", 0)])
def test_estimate_volume_gib_rejects_bad_sizes(compressed, unpacked):
    with pytest.raises(InvalidInputs):
        estimate_volume_gib(compressed, unpacked)


# ---- optional keys ----


def test_poll_seconds_has_a_default(config):
    config["timeouts"].pop("poll_seconds", None)
    assert resolve(config)["poll_seconds"] == 15
    config["timeouts"]["poll_seconds"] = 5
    assert resolve(config)["poll_seconds"] == 5


def test_registry_credentials_are_references(config):
    assert resolve(config)["registry_credentials"] == {}
    credentials = {"nvcr.io": {"ssm_secure_parameter": "/ml-cache/ngc"},
                   "docker.io": {"ssm_secure_parameter": "/ml-cache/hub"}}
    config = with_config(config, "aws", registry_credentials=credentials)
    assert resolve(config)["registry_credentials"] == credentials


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"quay.io": {"ssm_secure_parameter": "/ml-cache/quay"}}, r"'quay\.io', not an allowed registry"),
        ({"nvcr.io": "/ml-cache/ngc"}, r"registry_credentials\['nvcr\.io'\]: '/ml-cache/ngc' is not of type 'object'"),
        ({"nvcr.io": {"ssm_secure_parameter": "hunter 2"}}, r"registry_credentials\['nvcr\.io'\]"),
        ({"nvcr.io": None}, "registry_credentials"),
        (["nvcr.io"], "must be a mapping"),
    ],
)
def test_bad_registry_credentials(config, credentials, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(with_config(config, "aws", registry_credentials=credentials))
