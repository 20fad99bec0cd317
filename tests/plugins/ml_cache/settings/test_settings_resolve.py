"""Merging the form over the config, and every value rejected with its key before any AWS call."""

import copy
import json

import pytest

from ml_cache.images import InvalidInputs
from ml_cache.settings import BuildSettings, resolve_build_settings, resolve_rollout_settings
from ml_cache.settings.resolve import BUILD_FORM_FIELDS

REGION = "us-west-2"

SHA_A = "sha256:" + "a" * 64


def resolve(config, **params):
    return resolve_build_settings(config, params, region=REGION)


def with_config(config, section, **changes):
    changed = copy.deepcopy(config)
    changed.setdefault(section, {}).update(changes)
    return changed


# ---- defaults and merging ----


def test_repo_defaults_resolve_and_round_trip_through_json(config):
    resolved = resolve(config)
    dumped = resolved.model_dump(mode="json")
    assert json.loads(json.dumps(dumped)) == dumped
    assert BuildSettings.model_validate(dumped) == resolved  # what a later task reads back from XCom
    assert resolved.build.images == ["public.ecr.aws/docker/library/busybox:1.37"]
    assert resolved.platform == "linux/amd64"
    assert resolved.build.fsr_availability_zones == ["us-west-2a", "us-west-2b", "us-west-2c"]
    assert resolved.timeouts.build_seconds == 7200
    assert resolved.aws.ssm_parameter == "/ml-container-cache/snapshot-id"
    assert resolved.ami_ssm_parameter == (
        "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
    )


def test_params_override_and_none_means_default(config):
    resolved = resolve(
        config,
        images=["busybox:1.37", f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}"],
        architecture="arm64",
        volume_size_gib=None,
        pull_parallelism=8,
    )
    assert resolved.build.images == ["docker.io/library/busybox:1.37", f"nvcr.io/nvidia/pytorch:24.08-py3@{SHA_A}"]
    assert resolved.platform == "linux/arm64"
    assert resolved.build.volume_size_gib is None  # computed from the resolved images by resolve_images
    assert resolved.build.pull_parallelism == 8


def test_unknown_param_is_an_error_naming_it(config):
    with pytest.raises(InvalidInputs, match=r"unknown parameter\(s\) \['unrelated_param'\]"):
        resolve(config, unrelated_param="typo")


def test_unknown_config_key_is_an_error_naming_it(config):
    with pytest.raises(InvalidInputs, match=r"build\.volume_size: Extra inputs are not permitted"):
        resolve(with_config(config, "build", volume_size=10))
    with pytest.raises(InvalidInputs, match=r"unknown section\(s\) \['biuld'\]"):
        resolve({**config, "biuld": {}})


def test_allowed_registries_is_not_a_run_param(config):
    assert "allowed_registries" not in BUILD_FORM_FIELDS
    with pytest.raises(InvalidInputs, match="allowed_registries cannot be overridden"):
        resolve(config, allowed_registries=["*"])


def test_missing_required_key_is_named(config):
    del config["build"]["images"]
    with pytest.raises(InvalidInputs, match=r"build\.images: Field required"):
        resolve(config)
    assert resolve(config, images=["busybox:1"]).build.images == ["docker.io/library/busybox:1"]


def test_settings_are_immutable(config):
    with pytest.raises(ValueError, match="frozen"):
        resolve(config).build.images = []


# ---- rejected build values ----


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"images": []}, "build.images"),
        ({"images": "busybox"}, "build.images: Input should be a valid list"),
        ({"images": ["busybox", "busybox:latest"]}, "duplicate"),
        ({"images": ["quay.io/evil/miner"]}, r"quay\.io.*not in allowed_registries"),
        ({"images": ["busybox;rm -rf /"]}, r"busybox;rm -rf /"),
        ({"architecture": "amd64"}, "build.architecture.*'amd64'"),
        ({"architecture": "X86_64"}, "architecture"),
        ({"kubernetes_version": 1.33}, "build.kubernetes_version: Input should be a valid string"),
        ({"kubernetes_version": "v1.33"}, "kubernetes_version"),
        ({"kubernetes_version": "1.33; id"}, "kubernetes_version"),
        ({"kubernetes_version": "1.33\n"}, "kubernetes_version"),
        ({"instance_types": []}, "build.instance_types: List should have at least 1 item"),
        ({"instance_types": "c6i.2xlarge"}, "build.instance_types: Input should be a valid list"),
        ({"instance_types": ["c6i.2xlarge", "c6i.2xlarge"]}, "twice"),
        ({"instance_types": ["C6i.2xlarge"]}, "C6i"),
        ({"instance_types": ["c6i"]}, "'c6i'"),
        ({"instance_types": ["c6i.2xlarge;id"]}, r"build\.instance_types\.0"),
        ({"instance_types": [""]}, r"build\.instance_types\.0"),
        ({"volume_size_gib": 0}, "build.volume_size_gib: Input should be greater than or equal to 1"),
        ({"volume_size_gib": 16385}, "volume_size_gib: Input should be less than or equal to 16384"),
        ({"volume_size_gib": "100"}, "build.volume_size_gib: Input should be a valid integer"),
        ({"volume_size_gib": 100.0}, "build.volume_size_gib: Input should be a valid integer"),
        ({"volume_size_gib": True}, "build.volume_size_gib: Input should be a valid integer"),
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
        ({"snapshot_description": "x" * 256}, "snapshot_description: String should have at most 255"),
        ({"snapshot_description": "line1\nline2"}, "printable"),
        ({"snapshot_description": "   "}, "snapshot_description"),
        ({"snapshot_description": 5}, "snapshot_description"),
        ({"enable_fast_snapshot_restore": "true"}, "enable_fast_snapshot_restore: Input should be a valid boolean"),
        ({"fsr_availability_zones": []}, "fsr_availability_zones must not be empty"),
        ({"fsr_availability_zones": [""]}, r"build\.fsr_availability_zones\.0.*''"),
        ({"fsr_availability_zones": ["us-east-1a"]}, r"\['us-east-1a'\] are not availability zones of us-west-2"),
        ({"fsr_availability_zones": ["us-west-2"]}, "fsr_availability_zones.0"),
        ({"fsr_availability_zones": ["us-west-2ab"]}, "fsr_availability_zones"),
        ({"fsr_availability_zones": ["us-west-2A"]}, "fsr_availability_zones.0"),
        ({"fsr_availability_zones": ["us-west-2a", "us-west-2a"]}, "twice"),
        ({"fsr_availability_zones": "us-west-2a"}, "Input should be a valid list"),
        ({"pull_parallelism": 0}, "pull_parallelism: Input should be greater than or equal to 1"),
        ({"pull_parallelism": 17}, "pull_parallelism"),
    ],
)
def test_bad_build_values_are_rejected_and_named(config, params, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(config, **params)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"volume_size_gib": 1, "volume_iops": 3000, "volume_throughput_mibps": 125}, 3000),  # free baseline
        ({"volume_size_gib": 32, "volume_iops": 16000, "volume_throughput_mibps": 1000}, 16000),
        ({"volume_size_gib": 16384, "volume_iops": 4000, "volume_throughput_mibps": 1000}, 4000),
    ],
)
def test_gp3_limits_accept_the_edges(config, params, expected):
    assert resolve(config, **params).build.volume_iops == expected


def test_fsr_disabled_allows_no_zones(config):
    resolved = resolve(config, enable_fast_snapshot_restore=False, fsr_availability_zones=[])
    assert resolved.build.enable_fast_snapshot_restore is False
    assert resolved.build.fsr_availability_zones == []


def test_fsr_zones_follow_the_region(config):
    config = with_config(config, "aws", region="eu-central-1")
    resolved = resolve_build_settings(
        config, {"fsr_availability_zones": ["eu-central-1a", "eu-central-1c"]}, region="eu-central-1"
    )
    assert resolved.build.fsr_availability_zones == ["eu-central-1a", "eu-central-1c"]
    with pytest.raises(InvalidInputs, match="us-west-2a"):
        resolve_build_settings(config, {}, region="eu-central-1")


def test_region_must_match_the_config_and_be_a_region(config):
    with pytest.raises(InvalidInputs, match="differs"):
        resolve_build_settings(config, {}, region="us-east-1")
    with pytest.raises(InvalidInputs, match="region"):
        resolve_build_settings(config, {}, region="")


# ---- aws and timeouts sections ----


def test_aws_ids_are_accepted(config):
    config = with_config(config, "aws", subnet_ids=["subnet-0123abcd", "subnet-0456ef01"],
                         security_group_ids=["sg-0abc"], kms_key_id="alias/ml-cache")
    aws = resolve(config).aws
    assert aws.subnet_ids == ["subnet-0123abcd", "subnet-0456ef01"]
    assert aws.security_group_ids == ["sg-0abc"]
    assert aws.kms_key_id == "alias/ml-cache"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subnet_ids": ["subnet-XYZ"]}, "subnet-XYZ"),
        ({"subnet_ids": [""]}, r"aws\.subnet_ids\.0"),
        ({"subnet_ids": ["subnet-01", "subnet-01"]}, "twice"),
        ({"subnet_ids": "subnet-01"}, "Input should be a valid list"),
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
        ({"build_seconds": 172801}, "timeouts.build_seconds: Input should be less than or equal to 172800"),
        ({"fsr_seconds": "4h"}, "timeouts.fsr_seconds: Input should be a valid integer"),
        ({"agent_online_seconds": -1}, "timeouts.agent_online_seconds"),
        ({"region": 1}, "timeouts.region: Extra inputs are not permitted"),
    ],
)
def test_bad_timeouts_are_named(config, changes, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(with_config(config, "timeouts", **changes))


def test_timeouts_have_defaults(config):
    config.pop("timeouts", None)
    assert resolve(config).timeouts.poll_seconds == 15
    assert resolve(with_config(config, "timeouts", poll_seconds=5)).timeouts.poll_seconds == 5


def test_bad_pipeline_name(config):
    config["pipeline"] = "ML Cache"
    with pytest.raises(InvalidInputs, match="pipeline"):
        resolve(config)


def test_credentials_only_for_allowed_registries(config):
    assert resolve(config).aws.registry_credentials == {}
    credentials = {"quay.io": {"source": "ssm_secure_parameter", "parameter_name": "/ml-cache/quay"}}
    with pytest.raises(InvalidInputs, match=r"'quay\.io', not an allowed registry"):
        resolve(with_config(config, "aws", registry_credentials=credentials))
    with pytest.raises(InvalidInputs, match="registry_credentials"):
        resolve(with_config(config, "aws", registry_credentials=["nvcr.io"]))


# ---- rollout ----


def test_rollout_settings_merge_the_form(config):
    settings = resolve_rollout_settings(config, {"snapshot_id": "snap-0123456789abcdef0", "force_update": None},
                                        region=REGION)
    assert settings.rollout.snapshot_id == "snap-0123456789abcdef0"
    assert settings.rollout.force_update is False
    assert settings.rollout.max_startup_seconds == 10
    assert settings.aws.ssm_parameter == "/ml-container-cache/snapshot-id"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"snapshot_id": "vol-0123"}, "rollout.snapshot_id"),
        ({"max_startup_seconds": 0}, "rollout.max_startup_seconds: Input should be greater than 0"),
        ({"force_update": "yes"}, "rollout.force_update"),
        ({"cluster_name": "x"}, r"unknown parameter\(s\) \['cluster_name'\]"),
    ],
)
def test_bad_rollout_values_are_named(config, params, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve_rollout_settings(config, params, region=REGION)


def test_rollout_needs_its_section(config):
    del config["rollout"]
    with pytest.raises(InvalidInputs, match="no `rollout:` mapping"):
        resolve_rollout_settings(config, {}, region=REGION)


NGC_SECRET = "arn:aws:secretsmanager:us-west-2:111122223333:secret:ngc-api-key-AbCdEf"


def test_registry_credentials_take_the_builder_spec_shape(config):
    credentials = {"nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_SECRET},
                   "docker.io": {"source": "ssm_secure_parameter", "parameter_name": "/ml-cache/hub"},
                   "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
                   "registry.k8s.io": {"source": "anonymous"}}
    assert resolve(with_config(config, "aws", registry_credentials=credentials)).aws.registry_credentials == credentials


def test_ecr_source_needs_an_ecr_host(config):
    """A host that is not <account>.dkr.ecr.<region>.amazonaws.com cannot get an ECR token: refused before AWS."""
    config["build"]["images"] = ["ghcr.io/acme/trainer:1.0"]
    with pytest.raises(InvalidInputs, match=r"image 'ghcr\.io/acme/trainer:1\.0'.*source is ecr.*not an ECR registry"):
        resolve(with_config(config, "aws", registry_credentials={"ghcr.io": {"source": "ecr"}}))
    config["build"]["images"] = ["123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/trainer:1.0"]
    config["build"]["allowed_registries"].append("123456789012.dkr.ecr.*.amazonaws.com")
    ecr = {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}}
    settings = resolve(with_config(config, "aws", registry_credentials=ecr))
    assert settings.build.images == config["build"]["images"]


def test_registry_endpoints_are_urls_of_allowed_registries(config):
    endpoints = {"nvcr.io": "https://nvcr-mirror.example.com", "docker.io": "http://127.0.0.1:5000"}
    assert resolve(with_config(config, "aws", registry_endpoints=endpoints)).aws.registry_endpoints == endpoints
    with pytest.raises(InvalidInputs, match=r"registry_endpoints\['nvcr\.io'\]: 'ftp://x' is not a registry URL"):
        resolve(with_config(config, "aws", registry_endpoints={"nvcr.io": "ftp://x"}))
    with pytest.raises(InvalidInputs, match=r"aws\.registry_endpoints names registry 'quay\.io', not an allowed"):
        resolve(with_config(config, "aws", registry_endpoints={"quay.io": "https://quay-mirror.example.com"}))


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"nvcr.io": "/ml-cache/ngc"}, r"registry_credentials\['nvcr\.io'\]: '/ml-cache/ngc' matches none of the"),
        ({"nvcr.io": {"source": "ssm_secure_parameter", "parameter_name": "hunter 2"}},
         r"registry_credentials\['nvcr\.io'\]"),
        ({"nvcr.io": {"source": "secretsmanager"}},
         r"not a secretsmanager credential; write it as \{\"source\": \"secretsmanager\", \"secret_arn\""),
        ({"nvcr.io": {"source": "vault", "path": "x"}}, r"matches none of the allowed shapes; a credential is one of"),
        ({"nvcr.io": {"ssm_secure_parameter": "/ml-cache/ngc"}}, "matches none of the allowed shapes"),
        ({"nvcr.io": None}, "registry_credentials"),
        (["nvcr.io"], "must be a mapping"),
    ],
)
def test_bad_registry_credentials_are_named(config, credentials, message):
    with pytest.raises(InvalidInputs, match=message):
        resolve(with_config(config, "aws", registry_credentials=credentials))


@pytest.mark.parametrize(("ref", "registry"), [("[::1]:5000/x:1", "[::1]:5000"),
                                               ("r.example.com:123456/x:1", "r.example.com:123456")])
def test_refs_the_builder_cannot_pull_fail_before_launch(config, ref, registry):
    config = with_config(config, "build", allowed_registries=[registry])
    with pytest.raises(InvalidInputs, match="the builder cannot pull it"):
        resolve(config, images=[ref])
