"""The builder instance as EC2 is asked for it: the launch plan, the RunInstances request, its volume.

Pure logic (no AWS call), so the builder's security properties are unit-tested on the request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ml_cache.tags import tag_specifications

ROOT_DEVICE = "/dev/xvda"
DATA_DEVICE = "/dev/xvdb"
ROOT_VOLUME_GIB = 30
DEADMAN_SLACK_MINUTES = 120


class BuilderLaunch(BaseModel):
    """What launching a builder needs, and nothing else (derived from the build settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str
    instance_types: list[str] = Field(min_length=1)
    # Fail closed: no subnet would mean the default VPC and a public IP (the Airflow policy refuses both).
    subnet_ids: list[str] = Field(min_length=1)
    security_group_ids: list[str]
    instance_profile: str
    kms_key_id: str | None
    volume_iops: int
    volume_throughput_mibps: int
    build_seconds: int

    def candidates(self) -> list[tuple[str, str]]:
        """(instance type, subnet) in the order to try: each type in every subnet before the next type."""
        return [(instance_type, subnet) for instance_type in self.instance_types for subnet in self.subnet_ids]


def deadman_user_data(minutes: int) -> str:
    """In-guest timer: with shutdown behaviour `terminate` the builder cannot outlive the run."""
    return f"#!/bin/bash\nshutdown -h +{int(minutes)}\n"


def builder_request(launch: BuilderLaunch, image_id: str, volume_size_gib: int, instance_type: str,
                    subnet: str, tags: dict[str, str], *, base_snapshot_id: str | None = None) -> dict[str, Any]:
    """RunInstances parameters: IMDSv2 only, a private interface in `subnet` with the configured security
    groups, encrypted volumes, terminate on shutdown. `tags` (the run's, with role=builder) go on the
    instance and both volumes at creation: the Airflow policy requires them there. The data volume is
    sized by decide_build (for the resolved images, never below its base) and starts from
    `base_snapshot_id` (incremental: it keeps that snapshot's KMS key unless one is configured)."""
    data_ebs: dict[str, Any] = {
        "VolumeSize": volume_size_gib,
        "VolumeType": "gp3",
        "Iops": launch.volume_iops,
        "Throughput": launch.volume_throughput_mibps,
        "Encrypted": True,
        "DeleteOnTermination": True,
    }
    if base_snapshot_id:
        data_ebs["SnapshotId"] = base_snapshot_id
    if launch.kms_key_id:
        data_ebs["KmsKeyId"] = launch.kms_key_id
    name_tag = {"Name": f"{launch.pipeline}-builder"}
    return {
        "ImageId": image_id,
        "InstanceType": instance_type,
        "IamInstanceProfile": {"Name": launch.instance_profile},
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "UserData": deadman_user_data(launch.build_seconds // 60 + DEADMAN_SLACK_MINUTES),
        "BlockDeviceMappings": [
            {"DeviceName": ROOT_DEVICE, "Ebs": {"VolumeSize": ROOT_VOLUME_GIB, "VolumeType": "gp3",
                                                "Encrypted": True, "DeleteOnTermination": True}},
            {"DeviceName": DATA_DEVICE, "Ebs": data_ebs},
        ],
        "NetworkInterfaces": [{
            "DeviceIndex": 0,
            "SubnetId": subnet,
            "Groups": list(launch.security_group_ids),
            "AssociatePublicIpAddress": False,
        }],
        "TagSpecifications": [*tag_specifications(["instance"], {**tags, **name_tag}),
                              *tag_specifications(["volume"], tags)],
    }


def builder_summary(instance: dict[str, Any]) -> dict[str, Any]:
    """What later tasks need of a launched builder (its XCom)."""
    return {
        "instance_id": instance["InstanceId"],
        "instance_type": instance["InstanceType"],
        "subnet_id": instance.get("SubnetId"),
        "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
    }


def data_volume_id(instance: dict[str, Any], device_name: str = DATA_DEVICE) -> str:
    """The volume attached at `device_name`: chosen by name, never by list position."""
    for mapping in instance.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == device_name and "Ebs" in mapping:
            return mapping["Ebs"]["VolumeId"]
    attached = [m.get("DeviceName") for m in instance.get("BlockDeviceMappings", [])]
    raise RuntimeError(f"No EBS volume at {device_name} on {instance['InstanceId']} (attached: {attached})")
