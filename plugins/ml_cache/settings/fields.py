"""Constrained field types of the settings: every limit is written here once.

The models use them, so the same limit validates the config file, the run's Params and the
trigger form (the form's JSON schema is generated from these annotations).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from ml_cache.images import PLATFORMS, InvalidInputs

# gp3 limits as given in the brief (AWS docs before the 2025 raise).
GP3_SIZE_GIB = (1, 16384)
GP3_IOPS = (3000, 16000)
GP3_IOPS_PER_GIB = 500
GP3_THROUGHPUT_MIBPS = (125, 1000)
GP3_MIBPS_PER_IOPS = 0.25
SSM_EXECUTION_TIMEOUT_MAX = 172800  # SSM Run Command executionTimeout, seconds
TIMEOUT_MAX = 30 * 86400

SNAPSHOT_ID_PATTERN = r"^snap-[0-9a-f]{8,17}$"
SNAPSHOT_ID_RE = re.compile(SNAPSHOT_ID_PATTERN[1:-1], re.ASCII)


def _pattern(regex: str, **constraints: int) -> type[str]:
    return Annotated[str, StringConstraints(pattern=f"^(?:{regex})$", **constraints)]  # type: ignore[return-value]


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"lists {value!r} twice")
        seen.add(value)
    return values


def _no_reserved_prefix(*prefixes: str):
    def check(name: str) -> str:
        if name.lower().startswith(prefixes):
            raise ValueError(f"{name!r} uses a prefix reserved by AWS ({', '.join(prefixes)})")
        return name
    return AfterValidator(check)


def _trimmed(text: str) -> str:
    if text != text.strip():
        raise ValueError(f"{text!r} has leading or trailing spaces")
    return text


def _printable(text: str) -> str:
    if not text.strip() or not text.isprintable():
        raise ValueError("must be printable text, not empty")
    return text


Region = _pattern(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")
PipelineName = _pattern(r"[a-z0-9][a-z0-9-]{0,62}")
Architecture = Literal[tuple(PLATFORMS)]  # type: ignore[valid-type]
KubernetesVersion = _pattern(r"1\.[0-9]{1,3}")
InstanceType = _pattern(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
SubnetId = _pattern(r"subnet-[0-9a-f]+")
SecurityGroupId = _pattern(r"sg-[0-9a-f]+")
AvailabilityZone = _pattern(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+[a-z]")
InstanceProfile = _pattern(
    r"[A-Za-z0-9_+=,.@-]{1,128}|arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[A-Za-z0-9_+=,.@/-]{1,128}")
KmsKeyId = _pattern(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9_/-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(?:key/[A-Za-z0-9_-]+|alias/[A-Za-z0-9_/-]+)")
SsmParameterName = Annotated[_pattern(r"(?:/[a-zA-Z0-9_.-]+)+", max_length=1011), _no_reserved_prefix("/aws/", "/ssm/")]
SsmDocumentName = Annotated[_pattern(r"[a-zA-Z0-9_.-]{3,128}"), _no_reserved_prefix("aws", "amazon", "amzn")]
LogGroupName = _pattern(r"[.\-_/#A-Za-z0-9]{1,512}")  # CloudWatch Logs' CreateLogGroup pattern
SnapshotName = Annotated[_pattern(r"[A-Za-z0-9 _.:/=+@-]{1,128}"), AfterValidator(_trimmed)]  # EC2 tag value
SnapshotDescription = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_printable)]
SnapshotId = Annotated[str, StringConstraints(pattern=SNAPSHOT_ID_PATTERN)]
EksName = _pattern(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
LaunchTemplateId = _pattern(r"lt-[0-9a-f]{8,17}")
DeviceName = _pattern(r"/dev/(?:xvd|sd)[b-z]")
ConnectionId = _pattern(r"[A-Za-z0-9_.-]{1,250}")
Namespace = _pattern(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A standard topic: SnsNotifier sends no MessageGroupId, which a FIFO (`.fifo`) topic requires.
SnsTopicArn = _pattern(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}")
DagName = Literal["build", "rollout", "janitor"]  # ml_container_cache_<name>

VolumeSizeGib = Annotated[int, Field(ge=GP3_SIZE_GIB[0], le=GP3_SIZE_GIB[1])]
VolumeIops = Annotated[int, Field(ge=GP3_IOPS[0], le=GP3_IOPS[1])]
VolumeThroughput = Annotated[int, Field(ge=GP3_THROUGHPUT_MIBPS[0], le=GP3_THROUGHPUT_MIBPS[1])]
PullParallelism = Annotated[int, Field(ge=1, le=16)]
Seconds = Annotated[int, Field(ge=1, le=TIMEOUT_MAX)]
BuildSeconds = Annotated[int, Field(ge=1, le=SSM_EXECUTION_TIMEOUT_MAX)]
StartupSeconds = Annotated[float, Field(gt=0, le=3600)]
LateMinutes = Annotated[int, Field(ge=1, le=TIMEOUT_MAX // 60)]


# Graviton (arm64) families put a `g` right after the generation digit (c7g, m6gd, c6gn, g5g, x2gd, im4gn,
# is4gen, hpc7g), and a1 is the first one: https://docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html
_GRAVITON_FAMILY = re.compile(r"a1|[a-z]+[0-9]+g[a-z0-9-]*", re.ASCII)


def instance_architecture(instance_type: str) -> str:
    """arm64 or x86_64 as the type's family name says (DescribeInstanceTypes confirms it before a launch)."""
    return "arm64" if _GRAVITON_FAMILY.fullmatch(instance_type.partition(".")[0]) else "x86_64"


def unique_list(item: type, *, min_length: int = 0) -> type[list]:
    """A list of `item` without duplicates (the error names the repeated value)."""
    return Annotated[list[item], Field(min_length=min_length), AfterValidator(_unique)]  # type: ignore[valid-type,return-value]


def check_gp3(size_gib: int | None, iops: int, throughput_mibps: int) -> None:
    """gp3's ratio rules (InvalidInputs naming the limit). 3000 IOPS is the free baseline at any size;
    the 500 IOPS/GiB ratio limits what is bought on top. Without a size (computed later) only the
    throughput rule applies now; the caller checks again with the computed size."""
    if size_gib is not None and iops > GP3_IOPS[0] and iops > GP3_IOPS_PER_GIB * size_gib:
        raise InvalidInputs(f"volume_iops {iops} exceeds {GP3_IOPS_PER_GIB} IOPS per GiB of a {size_gib} GiB "
                            f"volume (at most {max(GP3_IOPS[0], GP3_IOPS_PER_GIB * size_gib)})")
    if throughput_mibps > GP3_MIBPS_PER_IOPS * iops:
        raise InvalidInputs(f"volume_throughput_mibps {throughput_mibps} exceeds {GP3_MIBPS_PER_IOPS} MiB/s per "
                            f"IOPS (at most {math.floor(GP3_MIBPS_PER_IOPS * iops)} with {iops} IOPS)")
