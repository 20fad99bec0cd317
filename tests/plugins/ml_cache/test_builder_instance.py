"""What RunInstances is asked for: the builder's security properties and the fallback order."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ml_cache.builder_instance import BuilderLaunch, builder_request, data_volume_id
from ml_cache.operators.builder import builder_tags
from ml_cache.settings import load_config, resolve_build_settings

LAUNCH = BuilderLaunch(
    pipeline="ml-container-cache", instance_types=["c6i.2xlarge", "m6i.2xlarge"],
    subnet_ids=["subnet-a", "subnet-b"], security_group_ids=["sg-1"], instance_profile="builder",
    volume_iops=3000, volume_throughput_mibps=250, kms_key_id=None, build_seconds=7200,
)


def test_candidates_try_each_type_in_every_subnet_first():
    assert LAUNCH.candidates() == [("c6i.2xlarge", "subnet-a"), ("c6i.2xlarge", "subnet-b"),
                                   ("m6i.2xlarge", "subnet-a"), ("m6i.2xlarge", "subnet-b")]


def test_no_builder_without_a_private_subnet():
    """Fail closed: no subnet used to mean the default VPC with a public IP."""
    fields = LAUNCH.model_dump()
    with pytest.raises(ValidationError, match="subnet_ids"):
        BuilderLaunch(**{**fields, "subnet_ids": []})


def test_the_build_settings_give_the_launch_its_values():
    config = load_config(str(Path(__file__).resolve().parents[3] / "plugins/ml_cache/defaults/ml_container_cache.yaml"))
    config["aws"] = {**config["aws"], "subnet_ids": ["subnet-0123abcd"]}  # as terraform output fills it in
    launch = resolve_build_settings(config, {"volume_iops": 4000}, region="us-west-2").builder_launch
    assert launch.subnet_ids == ["subnet-0123abcd"]
    assert launch.volume_iops == 4000
    assert launch.instance_profile == config["aws"]["instance_profile"]
    assert launch.build_seconds == 7200


def test_builder_is_locked_down():
    request = builder_request(LAUNCH, "ami-1", 100, "c6i.2xlarge", "subnet-a", {"ml-cache:run-id": "r"})
    assert "SubnetId" not in request and "SecurityGroupIds" not in request  # only the interface names them
    assert request["NetworkInterfaces"] == [{"DeviceIndex": 0, "SubnetId": "subnet-a", "Groups": ["sg-1"],
                                             "AssociatePublicIpAddress": False}]
    assert request["MetadataOptions"]["HttpTokens"] == "required"
    assert request["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert request["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert request["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is False
    assert request["NetworkInterfaces"][0]["Groups"] == ["sg-1"]
    assert all(m["Ebs"]["Encrypted"] for m in request["BlockDeviceMappings"])
    assert all(m["Ebs"]["DeleteOnTermination"] for m in request["BlockDeviceMappings"])
    data = next(m for m in request["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdb")["Ebs"]
    assert (data["VolumeSize"], data["Iops"], data["Throughput"], data["VolumeType"]) == (100, 3000, 250, "gp3")
    tagged = {spec["ResourceType"] for spec in request["TagSpecifications"]}
    assert tagged == {"instance", "volume"}


def test_deadman_timer_outlives_the_build():
    user_data = builder_request(LAUNCH, "ami-1", 100, "c6i.2xlarge", "subnet-a", {})["UserData"]
    minutes = int(user_data.split("+")[1])
    assert minutes * 60 > LAUNCH.build_seconds


def test_data_volume_is_chosen_by_device_name_not_position():
    instance = {"InstanceId": "i-1", "BlockDeviceMappings": [
        {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeId": "vol-data"}},
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeId": "vol-root"}}]}
    assert data_volume_id(instance) == "vol-data"
    with pytest.raises(RuntimeError, match="/dev/xvdb"):
        data_volume_id({"InstanceId": "i-1", "BlockDeviceMappings": instance["BlockDeviceMappings"][1:]})


def test_instance_and_volumes_carry_the_builder_tags_iam_requires():
    """The Airflow policy allows RunInstances only with role=builder, the pipeline and the run id on the
    instance and on its volumes (tests/terraform/test_airflow_policy.py evaluates this very request)."""
    tags = builder_tags("ml-container-cache", "manual__1")
    request = builder_request(LAUNCH, "ami-1", 100, "c6i.2xlarge", "subnet-a", tags)
    by_type = {spec["ResourceType"]: {t["Key"]: t["Value"] for t in spec["Tags"]}
               for spec in request["TagSpecifications"]}
    for resource_type in ("instance", "volume"):
        assert by_type[resource_type]["ml-cache:role"] == "builder"
        assert by_type[resource_type]["ml-cache:pipeline"] == "ml-container-cache"
        assert by_type[resource_type]["ml-cache:run-id"] == "manual__1"
