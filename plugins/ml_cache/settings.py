"""Run-time configuration: the version-controlled YAML defaults merged with a run's Params.

Everything is validated here, before the DAG makes its first AWS call, so a bad input fails
the run in seconds with a message naming the value instead of leaving a builder behind.
Pure Python + PyYAML: the DAG imports this at parse time but reads the file only at run time.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import yaml

from ml_cache.builder_spec import validate_registry_credentials
from ml_cache.images import PLATFORMS, InvalidInputs, registry_allowed, show, validate_images

CONFIG_ENV = "ML_CACHE_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "ml_container_cache.yaml"

# Keys under `build:` a run may override from the trigger form. `allowed_registries` is
# deliberately absent: an allow-list a run can widen is no allow-list.
BUILD_PARAM_KEYS = (
    "images",
    "architecture",
    "kubernetes_version",
    "instance_types",
    "volume_size_gib",
    "volume_iops",
    "volume_throughput_mibps",
    "snapshot_name",
    "snapshot_description",
    "enable_fast_snapshot_restore",
    "fsr_availability_zones",
    "pull_parallelism",
)
TIMEOUT_KEYS = ("agent_online_seconds", "build_seconds", "snapshot_seconds", "fsr_seconds")
TIMEOUT_DEFAULTS = {"poll_seconds": 15}  # optional keys: an older config file still resolves

# gp3 limits as given in the brief (AWS docs before the 2025 raise).
GP3_SIZE_GIB = (1, 16384)
GP3_IOPS = (3000, 16000)
GP3_IOPS_PER_GIB = 500
GP3_THROUGHPUT_MIBPS = (125, 1000)
GP3_MIBPS_PER_IOPS = 0.25
PULL_PARALLELISM = (1, 16)
SSM_EXECUTION_TIMEOUT_MAX = 172800
MIN_VOLUME_GIB = 8
VOLUME_HEADROOM = 1.3
GIB = 1024**3

_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+", re.ASCII)
_K8S_VERSION_RE = re.compile(r"1\.[0-9]{1,3}", re.ASCII)
_INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+", re.ASCII)
_SUBNET_RE = re.compile(r"subnet-[0-9a-f]+", re.ASCII)
_SECURITY_GROUP_RE = re.compile(r"sg-[0-9a-f]+", re.ASCII)
_PIPELINE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", re.ASCII)
_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9 _.:/=+@-]{1,128}", re.ASCII)  # EC2 tag characters
_SSM_PARAMETER_RE = re.compile(r"(?:/[a-zA-Z0-9_.-]+)+", re.ASCII)
_SSM_DOCUMENT_RE = re.compile(r"[a-zA-Z0-9_.-]{3,128}", re.ASCII)
_INSTANCE_PROFILE_RE = re.compile(
    r"[\w+=,.@-]{1,128}|arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[\w+=,.@/-]{1,128}", re.ASCII
)
_KMS_KEY_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[\w/-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(?:key/[\w-]+|alias/[\w/-]+)",
    re.ASCII,
)
_SNAPSHOT_DESCRIPTION_MAX = 255


class ConfigError(InvalidInputs):
    """The configuration file is missing or not the YAML mapping we expect."""


def config_path() -> Path:
    """The file to read: $ML_CACHE_CONFIG if set, else config/ml_container_cache.yaml in the repo."""
    override = os.environ.get(CONFIG_ENV)
    return Path(override) if override else DEFAULT_CONFIG_PATH


def load_config(path: str | None = None) -> dict:
    """Read the YAML config (safe_load); errors name the file."""
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
    for section in ("aws", "build", "timeouts"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"ML cache config {str(file)!r} has no `{section}:` mapping")
    return config


def eks_ami_parameter(kubernetes_version: str, architecture: str, flavor: str = "standard") -> str:
    """Public SSM parameter holding the EKS-optimized AL2023 AMI id for a version/arch."""
    return (
        f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/"
        f"{architecture}/{flavor}/recommended/image_id"
    )


def estimate_volume_gib(total_compressed_bytes: int, total_unpacked_bytes: int) -> int:
    """containerd keeps compressed blobs and unpacked snapshots: size for both, plus 30 %."""
    for name, value in (("compressed", total_compressed_bytes), ("unpacked", total_unpacked_bytes)):
        if type(value) is not int or value < 0:
            raise InvalidInputs(f"total {name} bytes must be a non-negative integer, got {show(value)}")
    needed = (total_compressed_bytes + total_unpacked_bytes) * 13  # x1.3 in integers: no float error
    return max(MIN_VOLUME_GIB, -(-needed // (10 * GIB)))


# ---- small validators: each raises InvalidInputs naming the key and the value ----


def _int_in(key: str, value: object, low: int, high: int) -> int:
    if type(value) is not int:
        raise InvalidInputs(f"{key} must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise InvalidInputs(f"{key} must be between {low} and {high}, got {value}")
    return value


def _matching(key: str, value: object, pattern: re.Pattern[str], hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInputs(f"{key} {show(value)} is not {hint}")
    return value


def _unique_list(key: str, value: object, pattern: re.Pattern[str], hint: str, *, allow_empty: bool) -> list:
    if not isinstance(value, list | tuple):
        raise InvalidInputs(f"{key} must be a list, got {show(value)}")
    if not value and not allow_empty:
        raise InvalidInputs(f"{key} must not be empty")
    seen: set[str] = set()
    for item in value:
        _matching(f"{key} entry", item, pattern, hint)
        if item in seen:
            raise InvalidInputs(f"{key} lists {item!r} twice")
        seen.add(item)
    return list(value)


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputs(f"{key} must be true or false, got {show(value)}")
    return value


def _text(key: str, value: object, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputs(f"{key} must be a non-empty string, got {show(value)}")
    if len(value) > max_length:
        raise InvalidInputs(f"{key} is {len(value)} characters long, at most {max_length} allowed")
    if not value.isprintable():
        raise InvalidInputs(f"{key} {show(value)} contains control characters")
    return value


def _ssm_parameter_name(key: str, value: object) -> str:
    name = _matching(key, value, _SSM_PARAMETER_RE, "an SSM parameter path like /name/snapshot-id")
    if len(name) > 1011:
        raise InvalidInputs(f"{key} is longer than 1011 characters")
    if name.lower().startswith(("/aws/", "/ssm/")):
        raise InvalidInputs(f"{key} {name!r} uses a prefix reserved by AWS (/aws, /ssm)")
    return name


def _ssm_document_name(key: str, value: object) -> str:
    name = _matching(key, value, _SSM_DOCUMENT_RE, "an SSM document name ([a-zA-Z0-9_.-]{3,128})")
    if name.lower().startswith(("aws", "amazon", "amzn")):
        raise InvalidInputs(f"{key} {name!r} uses a prefix reserved by AWS (aws, amazon, amzn)")
    return name


# ---- sections ----


def _merged_build(config: dict, params: dict) -> dict:
    build = config.get("build")
    if not isinstance(build, dict):
        raise InvalidInputs("config has no `build:` mapping")
    if not isinstance(params, dict):
        raise InvalidInputs(f"params must be a mapping, got {show(params)}")
    if params.get("allowed_registries") is not None:
        raise InvalidInputs("allowed_registries cannot be overridden per run; change the config file")
    merged = {key: build.get(key) for key in (*BUILD_PARAM_KEYS, "allowed_registries")}
    for key in BUILD_PARAM_KEYS:
        if params.get(key) is not None:
            merged[key] = params[key]
    missing = [key for key, value in merged.items() if value is None]
    if missing:
        raise InvalidInputs(f"no value for build setting(s) {', '.join(missing)}: not in params or config")
    return merged


def _volume(build: dict) -> dict:
    size = _int_in("volume_size_gib", build["volume_size_gib"], *GP3_SIZE_GIB)
    iops = _int_in("volume_iops", build["volume_iops"], *GP3_IOPS)
    # 3000 IOPS is gp3's free baseline at any size; the 500 IOPS/GiB ratio limits what is bought on top.
    if iops > GP3_IOPS[0] and iops > GP3_IOPS_PER_GIB * size:
        raise InvalidInputs(
            f"volume_iops {iops} exceeds {GP3_IOPS_PER_GIB} IOPS per GiB of a {size} GiB volume "
            f"(at most {max(GP3_IOPS[0], GP3_IOPS_PER_GIB * size)})"
        )
    throughput = _int_in("volume_throughput_mibps", build["volume_throughput_mibps"], *GP3_THROUGHPUT_MIBPS)
    if throughput > GP3_MIBPS_PER_IOPS * iops:
        raise InvalidInputs(
            f"volume_throughput_mibps {throughput} exceeds {GP3_MIBPS_PER_IOPS} MiB/s per IOPS "
            f"(at most {math.floor(GP3_MIBPS_PER_IOPS * iops)} with {iops} IOPS)"
        )
    return {"volume_size_gib": size, "volume_iops": iops, "volume_throughput_mibps": throughput}


def _fast_snapshot_restore(build: dict, region: str) -> dict:
    enabled = _bool("enable_fast_snapshot_restore", build["enable_fast_snapshot_restore"])
    zone_re = re.compile(re.escape(region) + r"[a-z]", re.ASCII)
    zones = _unique_list(
        "fsr_availability_zones",
        build["fsr_availability_zones"],
        zone_re,
        f"an availability zone of region {region} ({region}a, {region}b, ...)",
        allow_empty=not enabled,
    )
    return {"enable_fast_snapshot_restore": enabled, "fsr_availability_zones": zones}


def _registry_credentials(value: object, allowed: list[str]) -> dict[str, dict[str, str]]:
    """registry host -> credential source, in the builder spec's shape (scripts/build_spec.schema.json).
    Only references travel to the builder, never the secrets themselves."""
    if value is None:
        return {}
    credentials = validate_registry_credentials(value)
    for registry in credentials:
        if not registry_allowed(registry, allowed):
            raise InvalidInputs(f"aws.registry_credentials names registry {show(registry)}, not an allowed registry")
    return credentials


def _aws_section(config: dict, region: str) -> dict:
    aws = config.get("aws")
    if not isinstance(aws, dict):
        raise InvalidInputs("config has no `aws:` mapping")
    configured_region = aws.get("region")
    if configured_region is not None and configured_region != region:
        raise InvalidInputs(f"config aws.region {configured_region!r} differs from the connection's region {region!r}")
    kms_key_id = aws.get("kms_key_id")
    if kms_key_id is not None:
        _matching("aws.kms_key_id", kms_key_id, _KMS_KEY_RE, "a KMS key id, alias or ARN")
    return {
        "subnet_ids": _unique_list(
            "aws.subnet_ids", aws.get("subnet_ids", []), _SUBNET_RE, "a subnet id (subnet-...)", allow_empty=True
        ),
        "security_group_ids": _unique_list(
            "aws.security_group_ids",
            aws.get("security_group_ids", []),
            _SECURITY_GROUP_RE,
            "a security group id (sg-...)",
            allow_empty=True,
        ),
        "instance_profile": _matching(
            "aws.instance_profile", aws.get("instance_profile"), _INSTANCE_PROFILE_RE, "an instance profile name"
        ),
        "ssm_parameter": _ssm_parameter_name("aws.ssm_parameter", aws.get("ssm_parameter")),
        "ssm_metadata_parameter": _ssm_parameter_name("aws.ssm_metadata_parameter", aws.get("ssm_metadata_parameter")),
        "ssm_document": _ssm_document_name("aws.ssm_document", aws.get("ssm_document")),
        "kms_key_id": kms_key_id,
    }


def _timeouts(config: dict) -> dict:
    timeouts = config.get("timeouts")
    if not isinstance(timeouts, dict):
        raise InvalidInputs("config has no `timeouts:` mapping")
    missing = [key for key in TIMEOUT_KEYS if key not in timeouts]
    if missing:
        raise InvalidInputs(f"config timeouts lack {', '.join(missing)}")
    timeouts = {**TIMEOUT_DEFAULTS, **timeouts}
    odd = [key for key in timeouts if not (isinstance(key, str) and key.endswith("_seconds"))]
    if odd:
        raise InvalidInputs(f"config timeouts keys must end in _seconds, got {show(odd)}")
    result = {key: _int_in(f"timeouts.{key}", value, 1, 30 * 86400) for key, value in timeouts.items()}
    _int_in("timeouts.build_seconds", result["build_seconds"], 1, SSM_EXECUTION_TIMEOUT_MAX)
    return result


def resolve_build_settings(config: dict, params: dict, *, region: str) -> dict:
    """Merge run Params over the config's `build:` defaults (None = use the default), validate
    every value, and return one flat JSON-serialisable dict for the DAG's tasks."""
    if not isinstance(config, dict):
        raise InvalidInputs(f"config must be a mapping, got {show(config)}")
    region = _matching("region", region, _REGION_RE, "an AWS region like us-west-2")
    pipeline = _matching("pipeline", config.get("pipeline"), _PIPELINE_RE, "a lowercase name ([a-z0-9-], up to 63)")
    aws = _aws_section(config, region)  # first: a region mismatch explains any AZ error that follows
    build = _merged_build(config, params or {})

    allowed = build["allowed_registries"]
    if not isinstance(allowed, list) or not allowed or not all(isinstance(a, str) and a for a in allowed):
        raise InvalidInputs(f"allowed_registries must be a non-empty list of hosts, got {show(allowed)}")
    images = validate_images(build["images"], allowed)

    architecture = build["architecture"]
    if architecture not in PLATFORMS:
        raise InvalidInputs(f"architecture {show(architecture)} is not one of {sorted(PLATFORMS)}")
    kubernetes_version = _matching(
        "kubernetes_version",
        build["kubernetes_version"],
        _K8S_VERSION_RE,
        'a Kubernetes minor version string like "1.33" (quote it in YAML)',
    )
    instance_types = _unique_list(
        "instance_types",
        build["instance_types"],
        _INSTANCE_TYPE_RE,
        "an EC2 instance type like c6i.2xlarge",
        allow_empty=False,
    )
    snapshot_name = _matching(
        "snapshot_name", build["snapshot_name"], _TAG_VALUE_RE, "1-128 of letters, digits, spaces and _.:/=+@-"
    )
    if snapshot_name != snapshot_name.strip():
        raise InvalidInputs(f"snapshot_name {snapshot_name!r} has leading or trailing spaces")

    return {
        "pipeline": pipeline,
        "region": region,
        "images": [str(image) for image in images],
        "allowed_registries": list(allowed),
        "architecture": architecture,
        "platform": PLATFORMS[architecture],
        "kubernetes_version": kubernetes_version,
        "ami_ssm_parameter": eks_ami_parameter(kubernetes_version, architecture),
        "instance_types": instance_types,
        **_volume(build),
        "snapshot_name": snapshot_name,
        "snapshot_description": _text("snapshot_description", build["snapshot_description"], _SNAPSHOT_DESCRIPTION_MAX),
        **_fast_snapshot_restore(build, region),
        "pull_parallelism": _int_in("pull_parallelism", build["pull_parallelism"], *PULL_PARALLELISM),
        **aws,
        "registry_credentials": _registry_credentials(config["aws"].get("registry_credentials"), allowed),
        **_timeouts(config),
    }


# ---- rollout ----

# Keys a rollout run may set from its trigger form; None keeps the config (or the event's) value.
ROLLOUT_PARAM_KEYS = ("snapshot_id", "force_update", "max_startup_seconds", "uncached_baseline")
ROLLOUT_TIMEOUT_DEFAULTS = {"update_seconds": 3600, "validation_seconds": 900}
_EKS_NAME_RE = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}", re.ASCII)
_LAUNCH_TEMPLATE_RE = re.compile(r"lt-[0-9a-f]{8,17}", re.ASCII)
_DEVICE_NAME_RE = re.compile(r"/dev/(?:xvd|sd)[b-z]", re.ASCII)
_CONN_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,250}", re.ASCII)
_NAMESPACE_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
SNAPSHOT_ID_RE = re.compile(r"snap-[0-9a-f]{8,17}", re.ASCII)


def _number_in(key: str, value: object, low: float, high: float) -> float:
    if type(value) not in (int, float):
        raise InvalidInputs(f"{key} must be a number, got {show(value)}")
    if not low < value <= high:
        raise InvalidInputs(f"{key} must be above {low} and at most {high}, got {value}")
    return float(value)


def _optional_name(value: object) -> str | None:
    if value is None:
        return None
    return _matching("baseline_node_group_name", value, _EKS_NAME_RE, "an EKS node group name")


def resolve_rollout_settings(config: dict, params: dict, *, region: str) -> dict:
    """The rollout's settings: config `rollout:` (Terraform's output) merged with the run's Params."""
    rollout = config.get("rollout")
    if not isinstance(rollout, dict):
        raise InvalidInputs("config has no `rollout:` mapping (Terraform's ml_cache_config output has one)")
    params = params or {}
    merged = {**rollout, **{key: params[key] for key in ROLLOUT_PARAM_KEYS if params.get(key) is not None}}
    snapshot_id = merged.get("snapshot_id")
    if snapshot_id is not None:
        _matching("snapshot_id", snapshot_id, SNAPSHOT_ID_RE, "an EBS snapshot id like snap-0123456789abcdef0")
    conn_id = merged.get("kubernetes_conn_id")
    if conn_id is not None:
        _matching("kubernetes_conn_id", conn_id, _CONN_ID_RE, "an Airflow connection id")
    timeouts = {**ROLLOUT_TIMEOUT_DEFAULTS, **_timeouts(config)}
    return {
        "pipeline": _matching("pipeline", config.get("pipeline"), _PIPELINE_RE, "a lowercase name"),
        "region": region,
        "cluster_name": _matching("cluster_name", merged.get("cluster_name"), _EKS_NAME_RE, "an EKS cluster name"),
        "node_group_name": _matching("node_group_name", merged.get("node_group_name"), _EKS_NAME_RE,
                                     "an EKS node group name"),
        "launch_template_id": _matching("launch_template_id", merged.get("launch_template_id"), _LAUNCH_TEMPLATE_RE,
                                        "a launch template id like lt-0123456789abcdef0"),
        "cache_device_name": _matching("cache_device_name", merged.get("cache_device_name", "/dev/xvdb"),
                                       _DEVICE_NAME_RE, "a device name like /dev/xvdb"),
        "kubernetes_conn_id": conn_id,
        "namespace": _matching("namespace", merged.get("namespace", "default"), _NAMESPACE_RE,
                               "a Kubernetes namespace name"),
        "max_startup_seconds": _number_in("max_startup_seconds", merged.get("max_startup_seconds", 10), 0, 3600),
        "force_update": _bool("force_update", merged.get("force_update", False)),
        "uncached_baseline": _bool("uncached_baseline", merged.get("uncached_baseline", False)),
        "baseline_node_group_name": _optional_name(merged.get("baseline_node_group_name")),
        "snapshot_id": snapshot_id,
        "ssm_parameter": _ssm_parameter_name("ssm_parameter", config.get("aws", {}).get("ssm_parameter")),
        "ssm_metadata_parameter": _ssm_parameter_name(
            "ssm_metadata_parameter", config.get("aws", {}).get("ssm_metadata_parameter")),
        **{key: timeouts[key] for key in ("poll_seconds", "update_seconds", "validation_seconds")},
    }
