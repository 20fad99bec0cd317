"""The pinned moto extension, through boto3 against the in-process local cloud."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import moto
import pytest
from botocore.exceptions import ClientError

from devstack import moto_ext
from devstack.volumes import data_plane_missing

ROOT_REASON = data_plane_missing()


# --- version pin ----------------------------------------------------------------------------

def test_refuses_another_moto_version() -> None:
    with pytest.raises(RuntimeError) as error:
        moto_ext.check_moto_version("5.3.0")
    assert "5.3.0" in str(error.value) and moto_ext.PINNED_MOTO_VERSION in str(error.value)


def test_accepts_the_pinned_version() -> None:
    moto_ext.check_moto_version(moto_ext.PINNED_MOTO_VERSION)
    assert moto.__version__ == moto_ext.PINNED_MOTO_VERSION


# --- Fast Snapshot Restore ------------------------------------------------------------------

def _snapshot(ec2, zone: str = "us-west-2a") -> str:
    volume = ec2.create_volume(AvailabilityZone=zone, Size=1)
    return ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]


def _states(ec2, snapshot_id: str) -> dict[str, dict]:
    items = ec2.describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["FastSnapshotRestores"]
    return {item["AvailabilityZone"]: item for item in items}


def test_fsr_goes_enabling_optimizing_enabled(ec2, set_faults) -> None:
    set_faults(fsr_enabling_seconds=0.6, fsr_optimizing_seconds=0.6)
    snapshot_id = _snapshot(ec2)
    answer = ec2.enable_fast_snapshot_restores(AvailabilityZones=["us-west-2a", "us-west-2b"],
                                               SourceSnapshotIds=[snapshot_id])
    assert answer["Unsuccessful"] == []
    assert {(i["AvailabilityZone"], i["State"]) for i in answer["Successful"]} == {
        ("us-west-2a", "enabling"), ("us-west-2b", "enabling")}
    assert all("EnablingTime" in i and "EnabledTime" not in i for i in answer["Successful"])
    time.sleep(0.8)
    states = _states(ec2, snapshot_id)
    assert {s["State"] for s in states.values()} == {"optimizing"}
    assert all("OptimizingTime" in s for s in states.values())
    time.sleep(0.6)
    states = _states(ec2, snapshot_id)
    assert {s["State"] for s in states.values()} == {"enabled"}
    item = states["us-west-2a"]
    assert item["EnablingTime"] <= item["OptimizingTime"] <= item["EnabledTime"]
    enabled = ec2.describe_fast_snapshot_restores(Filters=[
        {"Name": "state", "Values": ["enabled"]}, {"Name": "availability-zone", "Values": ["us-west-2b"]},
        {"Name": "snapshot-id", "Values": [snapshot_id]}])["FastSnapshotRestores"]
    assert [(i["SnapshotId"], i["AvailabilityZone"]) for i in enabled] == [(snapshot_id, "us-west-2b")]


def test_fsr_disable_goes_disabling_disabled(ec2, set_faults) -> None:
    set_faults(fsr_enabling_seconds=0, fsr_optimizing_seconds=0, fsr_disabling_seconds=0.5)
    snapshot_id = _snapshot(ec2)
    ec2.enable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
    answer = ec2.disable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
    assert answer["Successful"][0]["State"] == "disabling"
    time.sleep(0.7)
    item = _states(ec2, snapshot_id)["us-west-2a"]
    assert item["State"] == "disabled" and "DisabledTime" in item


def test_fsr_unsuccessful_entries_are_http_200(ec2, set_faults) -> None:
    set_faults(fsr_unsuccessful_azs=["us-west-2c"])
    snapshot_id = _snapshot(ec2)
    answer = ec2.enable_fast_snapshot_restores(
        AvailabilityZones=["us-west-2a", "us-west-2c", "eu-west-1a"],
        SourceSnapshotIds=[snapshot_id, "snap-0123456789abcdef0"])
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [(i["SnapshotId"], i["AvailabilityZone"]) for i in answer["Successful"]] == [(snapshot_id, "us-west-2a")]
    errors = {(u["SnapshotId"], e["AvailabilityZone"]): e["Error"]["Code"]
              for u in answer["Unsuccessful"] for e in u["FastSnapshotRestoreStateErrors"]}
    assert errors[(snapshot_id, "eu-west-1a")] == "InvalidParameterValue"
    assert errors[(snapshot_id, "us-west-2c")] == "InternalError"
    assert {errors[("snap-0123456789abcdef0", z)] for z in ("us-west-2a", "us-west-2c", "eu-west-1a")} == {
        "InvalidSnapshot.NotFound"}


def test_fsr_quota_of_five_snapshots_per_region(aws) -> None:
    ec2 = aws("ec2", region="eu-central-1")  # a region no other test enables FSR in
    snapshots = [_snapshot(ec2, "eu-central-1a") for _ in range(6)]
    for snapshot_id in snapshots[:5]:
        assert ec2.enable_fast_snapshot_restores(
            AvailabilityZones=["eu-central-1a"], SourceSnapshotIds=[snapshot_id])["Unsuccessful"] == []
    answer = ec2.enable_fast_snapshot_restores(AvailabilityZones=["eu-central-1a"], SourceSnapshotIds=[snapshots[5]])
    assert answer["Successful"] == []
    error = answer["Unsuccessful"][0]["FastSnapshotRestoreStateErrors"][0]["Error"]
    assert error["Code"] == "FastSnapshotRestoreLimitExceeded"
    # another AZ for an already counted snapshot is still fine
    assert ec2.enable_fast_snapshot_restores(
        AvailabilityZones=["eu-central-1b"], SourceSnapshotIds=[snapshots[0]])["Unsuccessful"] == []
    # deleting a snapshot frees its slot
    ec2.delete_snapshot(SnapshotId=snapshots[1])
    assert ec2.enable_fast_snapshot_restores(
        AvailabilityZones=["eu-central-1a"], SourceSnapshotIds=[snapshots[5]])["Unsuccessful"] == []


# --- snapshots of sandbox volumes -----------------------------------------------------------

def _data_volume(ec2, instance_id: str) -> str:
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["Volumes"]
    return next(v["VolumeId"] for v in volumes if v["Attachments"][0]["Device"] == "/dev/xvdb")


def test_snapshot_of_sandbox_volume_is_a_real_copy(cloud, ec2, launch, helpers) -> None:
    instance_id = launch(data_gib=1)
    volume_id = _data_volume(ec2, instance_id)
    volume_file = cloud.home / "volumes" / f"{volume_id}.img"
    assert volume_file.stat().st_size == 1024**3
    with volume_file.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"cached image bytes")
    snapshot = ec2.create_snapshot(VolumeId=volume_id, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": "ml-cache:run-id", "Value": "run-42"}]}])
    assert snapshot["State"] == "pending"
    assert snapshot["Tags"] == [{"Key": "ml-cache:run-id", "Value": "run-42"}]
    snapshot_id = snapshot["SnapshotId"]

    def completed():
        found = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        return found if found["State"] == "completed" else None

    found = helpers.wait_for(completed, what="snapshot completed")
    assert found["Progress"] == "100%"
    copy = cloud.home / "snapshots" / f"{snapshot_id}.img"
    with copy.open("rb") as handle:
        handle.seek(4096)
        assert handle.read(18) == b"cached image bytes"
    by_tag = ec2.describe_snapshots(Filters=[{"Name": "tag:ml-cache:run-id", "Values": ["run-42"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in by_tag] == [snapshot_id]
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert not copy.exists()


def test_snapshot_error_fault(cloud, ec2, launch, set_faults, helpers) -> None:
    instance_id = launch()
    set_faults(snapshot_error=True)
    snapshot_id = ec2.create_snapshot(VolumeId=_data_volume(ec2, instance_id))["SnapshotId"]
    helpers.wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == "error",
                     what="snapshot error")
    assert not (cloud.home / "snapshots" / f"{snapshot_id}.img").exists()


def test_snapshot_of_plain_volume_behaves_as_moto(ec2) -> None:
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=1)
    snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"])
    assert snapshot["State"] == "completed"


def test_volume_from_snapshot_starts_as_its_copy(cloud, ec2, launch, ssm, helpers) -> None:
    source = launch()
    volume_file = cloud.home / "volumes" / f"{_data_volume(ec2, source)}.img"
    with volume_file.open("r+b") as handle:
        handle.write(b"from the builder")
    snapshot_id = ec2.create_snapshot(VolumeId=_data_volume(ec2, source))["SnapshotId"]
    helpers.wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == "completed")
    image_id = ssm.get_parameter(
        Name="/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/nvidia/recommended/image_id"
    )["Parameter"]["Value"]
    node = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
                             BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {
                                 "SnapshotId": snapshot_id, "VolumeSize": 2, "DeleteOnTermination": True}}]
                             )["Instances"][0]["InstanceId"]
    try:
        restored = cloud.home / "volumes" / f"{_data_volume(ec2, node)}.img"
        with restored.open("rb") as handle:
            assert handle.read(16) == b"from the builder"
        assert restored.stat().st_size == 2 * 1024**3
    finally:
        ec2.terminate_instances(InstanceIds=[node])


@pytest.mark.root
@pytest.mark.skipif(ROOT_REASON is not None, reason=str(ROOT_REASON))
def test_snapshot_of_xfs_formatted_through_the_device_dir(cloud, ec2, ssm, launch, helpers) -> None:
    """As root: the builder formats the volume found by its EBS id; the snapshot copy is that XFS."""
    instance_id = launch(data_gib=1)
    helpers.wait_online(ssm, instance_id)
    volume_id = _data_volume(ec2, instance_id)
    script = [
        'dev="$ML_CACHE_DEVICE_DIR/nvme-Amazon_Elastic_Block_Store_$VOLUME"',
        'test -b "$(readlink -f "$dev")"',
        'mkfs.xfs -q "$dev"',
        'mp="$(mktemp -d)"; mount "$dev" "$mp"; echo cached > "$mp/marker"; sync; umount "$mp"',
    ]
    command = ssm.send_command(InstanceIds=[instance_id], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": [f"VOLUME={volume_id.replace('-', '')}", *script]})
    result = helpers.wait_invocation(ssm, command["Command"]["CommandId"], instance_id)
    assert result["Status"] == "Success", result["StandardErrorContent"]
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    helpers.wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == "completed")
    copy = cloud.home / "snapshots" / f"{snapshot_id}.img"
    check = subprocess.run(["xfs_repair", "-n", str(copy)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr


# --- instances ------------------------------------------------------------------------------

def test_capacity_fault_answers_insufficient_instance_capacity(ec2, launch, set_faults) -> None:
    set_faults(insufficient_capacity_instance_types=["c6i.2xlarge"])
    with pytest.raises(ClientError) as error:
        launch(instance_type="c6i.2xlarge")
    assert error.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "c6i.2xlarge" in error.value.response["Error"]["Message"]
    instance_id = launch(instance_type="m6i.2xlarge")
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"


def test_terminate_tears_the_sandbox_down(cloud, ec2, ssm, launch, helpers) -> None:
    instance_id = launch()
    kept_id = launch(delete_on_termination=False)
    _, state = helpers.devstack_call(cloud, "GET", "/_devstack/state")
    boxes = {box["instance_id"]: box for box in state["sandboxes"]}
    volume = boxes[instance_id]["volumes"][0]
    kept = boxes[kept_id]["volumes"][0]
    assert volume["device_name"] == "/dev/xvdb" and Path(volume["path"]).exists()
    assert len(boxes[instance_id]["volumes"]) == 1  # the root volume gets no backing file
    if ROOT_REASON is None:
        assert volume["loop_device"]
        link = Path(boxes[instance_id]["root"]) / "dev/disk/by-id" / (
            "nvme-Amazon_Elastic_Block_Store_" + volume["volume_id"].replace("-", ""))
        assert Path(link.readlink()) == Path(volume["loop_device"])
    helpers.wait_online(ssm, instance_id)
    command = ssm.send_command(InstanceIds=[instance_id], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": ["echo $$ > pid", "sleep 300"]})["Command"]
    pid_file = Path(boxes[instance_id]["root"]) / "pid"
    pid = int(helpers.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))
    ec2.terminate_instances(InstanceIds=[instance_id, kept_id])
    _, state = helpers.devstack_call(cloud, "GET", "/_devstack/state")
    boxes = {box["instance_id"]: box for box in state["sandboxes"]}
    assert boxes[instance_id]["terminated"] and boxes[kept_id]["terminated"]
    assert not Path(volume["path"]).exists()
    assert Path(kept["path"]).exists()  # DeleteOnTermination=false keeps the volume (and its file)
    assert not Path(f"/proc/{pid}").exists()
    result = helpers.wait_invocation(ssm, command["CommandId"], instance_id)
    assert (result["Status"], result["StatusDetails"]) == ("Failed", "Terminated")
    if ROOT_REASON is None:
        losetup = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True, check=True).stdout
        files = [d.get("back-file") for d in json.loads(losetup or '{"loopdevices": []}')["loopdevices"]]
        assert not any(str(cloud.home) in (f or "") for f in files if f and kept["volume_id"] in f)
        assert not any(volume["volume_id"] in (f or "") for f in files)
    ec2.delete_volume(VolumeId=kept["volume_id"])
    assert not Path(kept["path"]).exists()


# --- EKS AMI parameters ---------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34"])
def test_eks_ami_parameters_resolve_to_launchable_images(ec2, ssm, version) -> None:
    ids = {}
    for arch in ("x86_64", "arm64"):
        for flavor in ("standard", "nvidia"):
            name = f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/{arch}/{flavor}/recommended/image_id"
            parameter = ssm.get_parameter(Name=name)["Parameter"]
            assert parameter["Value"].startswith("ami-") and parameter["DataType"] == "aws:ec2:image"
            ids[(arch, flavor)] = parameter["Value"]
    assert len(set(ids.values())) == 4
    image = ec2.describe_images(ImageIds=[ids[("arm64", "nvidia")]])["Images"][0]
    assert image["Architecture"] == "arm64" and image["RootDeviceName"] == "/dev/xvda"
    instance = ec2.run_instances(ImageId=ids[("x86_64", "standard")], MinCount=1, MaxCount=1,
                                 InstanceType="m6i.large")["Instances"][0]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    assert instance["ImageId"] == ids[("x86_64", "standard")]


# --- SSM documents --------------------------------------------------------------------------

def test_schema_22_command_document_lifecycle(ssm) -> None:
    def content(text: str) -> str:
        return json.dumps({"schemaVersion": "2.2", "description": "build", "parameters": {
            "images": {"type": "String", "interpolationType": "ENV_VAR", "allowedPattern": "^[^\\n]*$"}},
            "mainSteps": [{"action": "aws:runShellScript", "name": "build",
                           "inputs": {"runCommand": [f"echo {text}"], "timeoutSeconds": "60"}}]})

    created = ssm.create_document(Name="devstack-doc-lifecycle", Content=content("v1"), DocumentType="Command",
                                  DocumentFormat="JSON")["DocumentDescription"]
    assert created["DocumentVersion"] == "1" and created["SchemaVersion"] == "2.2"
    updated = ssm.update_document(Name="devstack-doc-lifecycle", Content=content("v2"),
                                  DocumentVersion="$LATEST")["DocumentDescription"]
    assert updated["DocumentVersion"] == "2" and updated["DefaultVersion"] == "1"
    ssm.update_document_default_version(Name="devstack-doc-lifecycle", DocumentVersion="2")
    described = ssm.describe_document(Name="devstack-doc-lifecycle")["Document"]
    assert described["DefaultVersion"] == "2" and described["LatestVersion"] == "2"
    assert [p["Name"] for p in described["Parameters"]] == ["images"]
    fetched = ssm.get_document(Name="devstack-doc-lifecycle")
    assert fetched["DocumentVersion"] == "2" and "echo v2" in fetched["Content"]


# --- EKS node group updates -----------------------------------------------------------------

@pytest.fixture
def nodegroup(aws):
    """A cluster and a node group created from a launch template (version 1)."""
    ec2, eks, iam = aws("ec2"), aws("eks"), aws("iam")
    name = f"devstack-{time.monotonic_ns()}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-west-2a")["Subnet"]
    template = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"InstanceType": "g5.xlarge"})
    template_id = template["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=template_id, LaunchTemplateData={"InstanceType": "g5.2xlarge"})
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": [subnet["SubnetId"]]})
    eks.create_nodegroup(clusterName=name, nodegroupName="gpu", nodeRole=role, subnets=[subnet["SubnetId"]],
                         launchTemplate={"id": template_id, "version": "1"})
    return eks, name, template_id


def _wait_update(eks, cluster: str, update_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        update = eks.describe_update(name=cluster, updateId=update_id, nodegroupName="gpu")["update"]
        if update["status"] != "InProgress":
            return update
        time.sleep(0.1)
    raise AssertionError("update never finished")


def test_nodegroup_update_goes_in_progress_then_successful(nodegroup, set_faults) -> None:
    eks, cluster, template_id = nodegroup
    set_faults(nodegroup_update_seconds=0.5)
    update = eks.update_nodegroup_version(clusterName=cluster, nodegroupName="gpu", clientRequestToken="t-1",
                                          launchTemplate={"id": template_id, "version": "2"})["update"]
    assert (update["status"], update["type"]) == ("InProgress", "VersionUpdate")
    assert {"type": "LaunchTemplateVersion", "value": "2"} in update["params"]
    assert eks.describe_nodegroup(clusterName=cluster, nodegroupName="gpu")["nodegroup"]["status"] == "UPDATING"
    again = eks.update_nodegroup_version(clusterName=cluster, nodegroupName="gpu", clientRequestToken="t-1",
                                         launchTemplate={"id": template_id, "version": "2"})["update"]
    assert again["id"] == update["id"]  # same clientRequestToken: the same update
    with pytest.raises(eks.exceptions.ResourceInUseException):
        eks.update_nodegroup_version(clusterName=cluster, nodegroupName="gpu", clientRequestToken="t-2",
                                     launchTemplate={"id": template_id, "version": "2"})
    assert _wait_update(eks, cluster, update["id"])["status"] == "Successful"
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName="gpu")["nodegroup"]
    assert group["status"] == "ACTIVE" and group["launchTemplate"]["version"] == "2"
    assert eks.list_updates(name=cluster, nodegroupName="gpu")["updateIds"] == [update["id"]]


def test_nodegroup_update_failure_fault(nodegroup, set_faults) -> None:
    eks, cluster, template_id = nodegroup
    set_faults(nodegroup_update_seconds=0.2, nodegroup_update_failed="NodeCreationFailure")
    update = eks.update_nodegroup_version(clusterName=cluster, nodegroupName="gpu",
                                          launchTemplate={"id": template_id, "version": "2"})["update"]
    finished = _wait_update(eks, cluster, update["id"])
    assert finished["status"] == "Failed"
    assert finished["errors"][0]["errorCode"] == "NodeCreationFailure"
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName="gpu")["nodegroup"]
    assert group["status"] == "ACTIVE" and group["launchTemplate"]["version"] == "1"


def test_nodegroup_update_rejects_another_launch_template(nodegroup, aws) -> None:
    eks, cluster, _ = nodegroup
    other = aws("ec2").create_launch_template(LaunchTemplateName=f"other-{time.monotonic_ns()}",
                                              LaunchTemplateData={})["LaunchTemplate"]["LaunchTemplateId"]
    with pytest.raises(eks.exceptions.InvalidParameterException):
        eks.update_nodegroup_version(clusterName=cluster, nodegroupName="gpu",
                                     launchTemplate={"id": other, "version": "1"})
    with pytest.raises(eks.exceptions.ResourceNotFoundException):
        eks.describe_update(name=cluster, updateId="00000000-0000-0000-0000-000000000000")



def test_fsr_delays_follow_moto_state_manager_transition(cloud, ec2, helpers) -> None:
    """`POST /moto-api/state-manager/set-transition` for ec2::fast_snapshot_restore sets both delays."""
    transition = {"model_name": "ec2::fast_snapshot_restore",
                  "transition": {"progression": "time", "seconds": 0}}
    assert helpers.devstack_call(cloud, "POST", "/moto-api/state-manager/set-transition", transition)[0] == 201
    try:
        snapshot_id = _snapshot(ec2)
        ec2.enable_fast_snapshot_restores(AvailabilityZones=["us-west-2a"], SourceSnapshotIds=[snapshot_id])
        assert _states(ec2, snapshot_id)["us-west-2a"]["State"] == "enabled"
    finally:
        helpers.devstack_call(cloud, "POST", "/moto-api/state-manager/unset-transition",
                              {"model_name": "ec2::fast_snapshot_restore"})


def test_attach_and_detach_volume_after_launch(cloud, ec2, launch, helpers) -> None:
    """AttachVolume adds the volume (restored from a snapshot's copy) to the sandbox; detach removes it."""
    source = launch()
    with (cloud.home / "volumes" / f"{_data_volume(ec2, source)}.img").open("r+b") as handle:
        handle.write(b"snapshot data")
    snapshot_id = ec2.create_snapshot(VolumeId=_data_volume(ec2, source))["SnapshotId"]
    helpers.wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == "completed")
    node = launch()
    volume_id = ec2.create_volume(AvailabilityZone="us-west-2a", SnapshotId=snapshot_id, Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=volume_id, InstanceId=node, Device="/dev/xvdf")

    def sandbox_volumes() -> dict[str, dict]:
        _, state = helpers.devstack_call(cloud, "GET", "/_devstack/state")
        box = next(b for b in state["sandboxes"] if b["instance_id"] == node)
        return {v["volume_id"]: v for v in box["volumes"]}

    attached = sandbox_volumes()[volume_id]
    assert attached["device_name"] == "/dev/xvdf"
    with Path(attached["path"]).open("rb") as handle:
        assert handle.read(13) == b"snapshot data"
    if ROOT_REASON is None:
        assert attached["loop_device"]
    ec2.detach_volume(VolumeId=volume_id, InstanceId=node)
    assert volume_id not in sandbox_volumes()
    assert Path(attached["path"]).exists()  # detaching keeps the data
    if ROOT_REASON is None:
        listing = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True, check=True).stdout
        assert volume_id not in listing
    ec2.delete_volume(VolumeId=volume_id)
    assert not Path(attached["path"]).exists()


def test_listing_node_groups_of_a_missing_cluster_is_resource_not_found(aws) -> None:
    """As EKS answers (the janitor's inventory lists node groups), not moto's HTTP 500."""
    eks = aws("eks")
    with pytest.raises(eks.exceptions.ResourceNotFoundException):
        eks.list_nodegroups(clusterName="no-such-cluster")


def test_updates_go_with_their_deleted_node_group(nodegroup, aws, set_faults) -> None:
    """Another cluster's deleted node group and its unfinished update must not break this one's updates."""
    eks, cluster, template_id = nodegroup
    set_faults(nodegroup_update_seconds=30)
    update = eks.update_nodegroup_version(clusterName=cluster, nodegroupName="gpu",
                                          launchTemplate={"id": template_id, "version": "2"})["update"]
    eks.delete_nodegroup(clusterName=cluster, nodegroupName="gpu")
    eks.delete_cluster(name=cluster)
    set_faults(nodegroup_update_seconds=0.1)
    time.sleep(0.2)
    with pytest.raises(eks.exceptions.ResourceNotFoundException):
        eks.describe_update(name=cluster, updateId=update["id"], nodegroupName="gpu")
    # a fresh node group's update still works (it used to be a 500: KeyError on the deleted cluster)
    ec2, iam = aws("ec2"), aws("iam")
    name = f"devstack-{time.monotonic_ns()}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": [subnet]})
    eks.create_nodegroup(clusterName=name, nodegroupName="gpu", nodeRole=role, subnets=[subnet],
                         launchTemplate={"id": template_id, "version": "1"})
    fresh = eks.update_nodegroup_version(clusterName=name, nodegroupName="gpu",
                                         launchTemplate={"id": template_id, "version": "2"})["update"]
    assert _wait_update(eks, name, fresh["id"])["status"] == "Successful"
