"""The build's failure callback on the local cloud: it ends exactly this run's builders and FSR."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

from ml_cache.run_callbacks import clean_up_failed_build
from tests.conftest import REPO

ZONE = "ca-central-1a"


@pytest.fixture
def config(cloud_conn, tmp_path, monkeypatch):
    """The repo's config in the connection's region."""
    data = yaml.safe_load((REPO / "plugins/ml_cache/defaults/ml_container_cache.yaml").read_text())
    data["aws"].update({"region": cloud_conn.region, "subnet_ids": ["subnet-0123abcd"]})
    data["build"]["fsr_availability_zones"] = [ZONE]
    name = f"/ml-cache-{uuid.uuid4().hex[:8]}"
    data["aws"].update({"ssm_parameter": f"{name}/snapshot-id", "ssm_metadata_parameter": f"{name}/snapshot-metadata"})
    path = tmp_path / "ml_container_cache.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(path))
    return data


def _launch(ec2, **tags: str) -> str:
    tag_list = [{"Key": f"ml-cache:{key.replace('_', '-')}", "Value": value} for key, value in tags.items()]
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c6i.2xlarge",
                                 TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}])
    return instance["Instances"][0]["InstanceId"]


def _snapshot_with_fsr(ec2, **tags: str) -> str:
    volume = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    tag_list = [{"Key": f"ml-cache:{key.replace('_', '-')}", "Value": value} for key, value in tags.items()]
    snapshot = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list}])
    ec2.enable_fast_snapshot_restores(AvailabilityZones=[ZONE], SourceSnapshotIds=[snapshot["SnapshotId"]])
    return snapshot["SnapshotId"]


def _state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def _fsr_states(ec2, snapshot_id: str) -> set[str]:
    entries = ec2.describe_fast_snapshot_restores(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])
    return {entry["State"] for entry in entries["FastSnapshotRestores"]}


def test_terminates_only_this_runs_builders_and_retires_only_its_unpublished_fsr(cloud_conn, config):
    ec2, ssm = cloud_conn.client("ec2"), cloud_conn.client("ssm")
    pipeline, run_id, other_run = config["pipeline"], f"manual__{uuid.uuid4()}", f"manual__{uuid.uuid4()}"
    builder = _launch(ec2, pipeline=pipeline, run_id=run_id, role="builder")
    other_builder = _launch(ec2, pipeline=pipeline, run_id=other_run, role="builder")
    node = _launch(ec2, pipeline=pipeline)  # a GPU node as Terraform tags it: never ours to end
    unpublished = _snapshot_with_fsr(ec2, pipeline=pipeline, run_id=run_id, role="cache")
    published = _snapshot_with_fsr(ec2, pipeline=pipeline, run_id=other_run, role="cache")
    ssm.put_parameter(Name=config["aws"]["ssm_parameter"], Value=published, Type="String", Overwrite=True)
    ssm.put_parameter(Name=config["aws"]["ssm_metadata_parameter"], Value="{}", Type="String", Overwrite=True)

    clean_up_failed_build({"run_id": run_id, "reason": "timed_out"}, aws_conn_id=cloud_conn.conn_id)

    assert _state(ec2, builder) in ("shutting-down", "terminated")
    assert _state(ec2, other_builder) == "running" and _state(ec2, node) == "running"
    assert _fsr_states(ec2, unpublished) <= {"disabling", "disabled"}
    assert _fsr_states(ec2, published) & {"enabling", "optimizing", "enabled"}
    ec2.terminate_instances(InstanceIds=[other_builder, node])


def test_a_config_that_no_longer_validates_still_ends_the_runs_builders(cloud_conn, config, caplog):
    """Edited since the run started (here: subnets removed), the file still names the pipeline: the builder
    is terminated, and the FSR step is left to the janitor with the reason in the log."""
    ec2 = cloud_conn.client("ec2")
    run_id = f"manual__{uuid.uuid4()}"
    builder = _launch(ec2, pipeline=config["pipeline"], run_id=run_id, role="builder")
    config["aws"]["subnet_ids"] = []
    Path(os.environ["ML_CACHE_CONFIG"]).write_text(yaml.safe_dump(config))

    clean_up_failed_build({"run_id": run_id, "reason": "timed_out"}, aws_conn_id=cloud_conn.conn_id)

    assert _state(ec2, builder) in ("shutting-down", "terminated")
    assert "the config does not validate: aws.subnet_ids is empty" in caplog.text
