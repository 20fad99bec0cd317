"""What only EC2 can tell about a build's inputs, asked with read-only Describe calls before the builder
is launched: each FSR zone exists in the region and is available, each instance type is offered in
the region and runs the platform's architecture. Otherwise the run fails after the build (FSR on an
unknown zone) or at launch with an error no retry cures.
"""

from __future__ import annotations

from typing import Any

from ml_cache.images import InvalidInputs


def check_availability_zones(ec2: Any, zones: list[str], region: str) -> None:
    """DescribeAvailabilityZones: every zone listed for the region and `available` (an opt-in Local or
    Wavelength Zone the account has not joined is not listed)."""
    listed = {zone["ZoneName"]: zone["State"] for zone in ec2.describe_availability_zones()["AvailabilityZones"]}
    missing = [zone for zone in zones if zone not in listed]
    if missing:
        raise InvalidInputs(f"fsr_availability_zones {missing} do not exist in {region} "
                            f"(it has {sorted(listed)})")
    unavailable = {zone: listed[zone] for zone in zones if listed[zone] != "available"}
    if unavailable:
        raise InvalidInputs(f"fsr_availability_zones {sorted(unavailable)} are not available: {unavailable}")


def check_instance_types(ec2: Any, instance_types: list[str], architecture: str, region: str) -> None:
    """DescribeInstanceTypeOfferings (offered in the region) then DescribeInstanceTypes (the architecture):
    a launch with another architecture than the AMI's fails, and a type not offered never launches."""
    offerings = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="region", Filters=[{"Name": "instance-type", "Values": instance_types}])
    offered = {offer["InstanceType"] for page in offerings for offer in page["InstanceTypeOfferings"]}
    missing = [name for name in instance_types if name not in offered]
    if missing:
        raise InvalidInputs(f"instance_types {missing} are not offered in {region}")
    described = ec2.describe_instance_types(InstanceTypes=instance_types)["InstanceTypes"]
    architectures = {t["InstanceType"]: t["ProcessorInfo"]["SupportedArchitectures"] for t in described}
    other = {name: architectures.get(name, []) for name in instance_types
             if architecture not in architectures.get(name, [])}
    if other:
        raise InvalidInputs(f"instance_types {sorted(other)} do not run {architecture} (EC2 says {other})")
