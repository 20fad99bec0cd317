"""Snapshots of volumes restored from a snapshot are incremental, as EBS stores them, and the EBS
direct APIs (ListSnapshotBlocks, ListChangedBlocks) report it. Everything goes through the server's
EC2 API: CreateVolume from a snapshot, AttachVolume to a sandbox, CreateSnapshot."""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from devstack import volumes
from devstack.volumes import data_plane_missing

BLOCK = 524288
EKS_AMI = "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/nvidia/recommended/image_id"


@pytest.fixture
def ebs(aws):
    return aws("ebs")


@pytest.fixture
def disks(cloud, ec2, launch, helpers):
    """Create volumes attached to one sandbox instance, write their files, snapshot them; deletes
    the snapshots afterwards."""
    instance_id = launch()
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    zone = instance["Placement"]["AvailabilityZone"]
    devices = iter(f"/dev/xvd{letter}" for letter in "cdefghijklmnop")
    snapshots: list[str] = []

    class Disks:
        def volume(self, **create) -> tuple[str, object]:
            volume_id = ec2.create_volume(AvailabilityZone=zone, **create)["VolumeId"]
            ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=next(devices))
            return volume_id, cloud.home / "volumes" / f"{volume_id}.img"

        def snapshot(self, volume_id: str) -> str:
            snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
            snapshots.append(snapshot_id)
            helpers.wait_for(lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
                             == "completed", what=f"{snapshot_id} completed")
            return snapshot_id

    yield Disks()
    for snapshot_id in snapshots:
        ec2.delete_snapshot(SnapshotId=snapshot_id)


def _write_blocks(path, indexes, fill: bytes = b"x") -> None:
    with open(path, "r+b") as handle:
        for index in indexes:
            handle.seek(index * BLOCK)
            handle.write(fill * BLOCK)


def _all_pages(call, key: str, **kwargs) -> list[dict]:
    items, token = [], None
    while True:
        answer = call(**kwargs, **({"NextToken": token} if token else {}))
        items += answer[key]
        token = answer.get("NextToken")
        if not token:
            return items


def test_snapshot_of_restored_volume_stores_only_changed_blocks(cloud, disks, ebs, helpers) -> None:
    base_volume, base_file = disks.volume(Size=1)
    _write_blocks(base_file, range(10))
    parent = disks.snapshot(base_volume)
    restored, restored_file = disks.volume(Size=1, SnapshotId=parent)
    _write_blocks(restored_file, [3, 12], b"y")  # 3 rewritten, 12 new
    _write_blocks(restored_file, [5], b"\0")  # 5 zeroed (trimmed): nothing stored
    child = disks.snapshot(restored)

    blocks = ebs.list_snapshot_blocks(SnapshotId=child)
    assert [b["BlockIndex"] for b in blocks["Blocks"]] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 12]
    assert (blocks["VolumeSize"], blocks["BlockSize"]) == (1, BLOCK)
    changed = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)["ChangedBlocks"]
    assert [(c["BlockIndex"], "FirstBlockToken" in c, "SecondBlockToken" in c) for c in changed] == [
        (3, True, True), (5, True, False), (12, False, True)]

    billed = {s["snapshot_id"]: s for s in helpers.devstack_call(cloud, "GET", "/_devstack/billing")[1]["snapshots"]}
    assert billed[parent] | {"incremental": False} == billed[parent]
    assert (billed[parent]["full_bytes"], billed[parent]["incremental_bytes"]) == (10 * BLOCK, 10 * BLOCK)
    assert billed[child]["parent_snapshot_id"] == parent and billed[child]["incremental"] is True
    assert (billed[child]["full_bytes"], billed[child]["incremental_bytes"]) == (10 * BLOCK, 2 * BLOCK)


def test_same_kms_key_is_incremental_another_key_is_full(cloud, disks, ebs, helpers) -> None:
    base_volume, base_file = disks.volume(Size=1, Encrypted=True, KmsKeyId="key-a")
    _write_blocks(base_file, range(4))
    parent = disks.snapshot(base_volume)

    same, same_file = disks.volume(Size=1, SnapshotId=parent)  # inherits the snapshot's key
    _write_blocks(same_file, [1], b"y")
    incremental = disks.snapshot(same)
    other, other_file = disks.volume(Size=1, SnapshotId=parent, Encrypted=True, KmsKeyId="key-b")
    _write_blocks(other_file, [1], b"y")
    full = disks.snapshot(other)

    def changed(second: str) -> list[int]:
        answer = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=second)
        return [c["BlockIndex"] for c in answer["ChangedBlocks"]]

    assert changed(incremental) == [1]
    assert changed(full) == [0, 1, 2, 3]
    billed = {s["snapshot_id"]: s for s in helpers.devstack_call(cloud, "GET", "/_devstack/billing")[1]["snapshots"]}
    assert billed[full]["incremental"] is False
    assert "KMS key differs" in billed[full]["reason"] and "key-b" in billed[full]["reason"]
    assert billed[full]["incremental_bytes"] == 4 * BLOCK


def test_bigger_volume_from_snapshot_grows_the_file_smaller_is_refused(ec2, disks) -> None:
    base_volume, base_file = disks.volume(Size=2)
    _write_blocks(base_file, [0])
    parent = disks.snapshot(base_volume)
    _, bigger_file = disks.volume(Size=3, SnapshotId=parent)
    assert os.path.getsize(bigger_file) == 3 * 1024**3
    with open(bigger_file, "rb") as handle:
        assert handle.read(1) == b"x"
    with pytest.raises(ClientError) as error:
        ec2.create_volume(AvailabilityZone="us-west-2a", Size=1, SnapshotId=parent)
    assert error.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert error.value.response["Error"]["Message"] == (
        f"Volume of size 1 is smaller than snapshot {parent}, expect size >= 2")
    made = ec2.describe_volumes(Filters=[{"Name": "snapshot-id", "Values": [parent]}])["Volumes"]
    assert [v["Size"] for v in made] == [3]


def test_run_instances_with_a_mapping_smaller_than_its_snapshot_launches_nothing(ec2, ssm, disks) -> None:
    base_volume, _ = disks.volume(Size=2)
    parent = disks.snapshot(base_volume)
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    image_id = ssm.get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
    with pytest.raises(ClientError) as error:
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="g5.xlarge", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": parent, "VolumeSize": 1}}])
    assert error.value.response["Error"]["Code"] == "InvalidBlockDeviceMapping"
    assert error.value.response["Error"]["Message"] == (
        f"Volume of size 1GB is smaller than snapshot '{parent}', expect size >= 2GB")
    after = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert after == before


def test_list_changed_blocks_paginates_like_aws(disks, ebs) -> None:
    base_volume, base_file = disks.volume(Size=1)
    _write_blocks(base_file, [0])
    parent = disks.snapshot(base_volume)
    restored, restored_file = disks.volume(Size=1, SnapshotId=parent)
    with open(restored_file, "r+b") as handle:  # one byte per block is enough to store the block
        for index in range(1, 251):
            handle.seek(index * BLOCK)
            handle.write(b"z")
    child = disks.snapshot(restored)

    first = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child, MaxResults=100)
    assert [c["BlockIndex"] for c in first["ChangedBlocks"]] == list(range(1, 101))
    assert first["NextToken"]
    pages = _all_pages(ebs.list_changed_blocks, "ChangedBlocks", FirstSnapshotId=parent, SecondSnapshotId=child,
                       MaxResults=100)
    assert [c["BlockIndex"] for c in pages] == list(range(1, 251))
    started = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child, StartingBlockIndex=245)
    assert [c["BlockIndex"] for c in started["ChangedBlocks"]] == list(range(245, 251))
    assert "NextToken" not in started
    blocks = _all_pages(ebs.list_snapshot_blocks, "Blocks", SnapshotId=child, MaxResults=100)
    assert [b["BlockIndex"] for b in blocks] == list(range(0, 251))
    with pytest.raises(ClientError) as error:
        ebs.list_snapshot_blocks(SnapshotId=child, NextToken="bm90LWEtdG9rZW4=")
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert error.value.response["Reason"] == "INVALID_PAGE_TOKEN"


def test_unrelated_and_unknown_snapshots_are_refused(disks, ebs) -> None:
    one, one_file = disks.volume(Size=1)
    two, two_file = disks.volume(Size=1)
    _write_blocks(one_file, [0])
    _write_blocks(two_file, [0])
    first, second = disks.snapshot(one), disks.snapshot(two)
    with pytest.raises(ClientError) as error:
        ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)
    assert (error.value.response["Error"]["Code"], error.value.response["Reason"]) == (
        "ValidationException", "UNRELATED_SNAPSHOTS")
    with pytest.raises(ClientError) as error:
        ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_moto_own_ebs_direct_snapshots_keep_moto_answers(ebs) -> None:
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=7, BlockData=b"a" * BLOCK, DataLength=BLOCK,
                           Checksum="x", ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)
    assert [b["BlockIndex"] for b in ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]] == [7]



@pytest.mark.root
@pytest.mark.skipif(data_plane_missing() is not None, reason=str(data_plane_missing()))
def test_xfs_volume_restored_and_extended_snapshots_about_what_was_added(tmp_path, disks, ebs) -> None:
    """As the incremental build does: a restored XFS volume gets a new file; its snapshot stores about
    that file (plus some metadata and log blocks), not the whole filesystem."""
    base_volume, base_file = disks.volume(Size=1)
    volumes.make_xfs(base_file)
    mountpoint = tmp_path / "mnt"
    volumes.mount(base_file, mountpoint)
    try:
        (mountpoint / "old-layer").write_bytes(os.urandom(24 * 1024**2))
    finally:
        volumes.unmount(mountpoint)
    parent = disks.snapshot(base_volume)
    restored, restored_file = disks.volume(Size=1, SnapshotId=parent)
    volumes.mount(restored_file, mountpoint, nouuid=True)
    try:
        (mountpoint / "new-layer").write_bytes(os.urandom(8 * 1024**2))
    finally:
        volumes.unmount(mountpoint)
    child = disks.snapshot(restored)

    full = _all_pages(ebs.list_snapshot_blocks, "Blocks", SnapshotId=child)
    changed = _all_pages(ebs.list_changed_blocks, "ChangedBlocks", FirstSnapshotId=parent, SecondSnapshotId=child)
    stored = [c for c in changed if "SecondBlockToken" in c]
    assert len(full) * BLOCK >= 32 * 1024**2
    assert 8 * 1024**2 <= len(stored) * BLOCK <= 8 * 1024**2 + 12 * 1024**2, len(stored)
