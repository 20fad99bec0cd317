"""`dag.test()` against the local cloud: a moto server with our extension, over HTTP like AWS.

`mock_aws` would not intercept aiobotocore (the deferrable triggers), so the DAG talks to a real
server on 127.0.0.1 through the `aws_default` connection, exactly as it talks to AWS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml

from tests.conftest import REPO

REGION = "us-west-2"
PARAMETER = "/ml-container-cache/snapshot-id"
METADATA_PARAMETER = "/ml-container-cache/snapshot-metadata"
INSTANCE_PROFILE = "ml-container-cache-builder"
PIPELINE = "ml-container-cache"
PREVIOUS_RUN_ID = "scheduled__previous-week"


class LocalCloud:
    """Handles on the running local cloud for one test: clients, faults, the DAG's config file."""

    def __init__(self, endpoint: str, config_path: Path, registry: str | None, images: dict[str, str]):
        self.endpoint = endpoint
        self.config_path = config_path
        self.registry = registry
        self.images = images
        self.previous_snapshot = ""  # the published snapshot every test starts from (publish_previous)
        self._previous_as_published: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def set_faults(self, **faults: Any) -> None:
        requests.post(f"{self.endpoint}/_devstack/faults", json=faults, timeout=10).raise_for_status()

    def reset_faults(self) -> None:
        requests.delete(f"{self.endpoint}/_devstack/faults", timeout=10).raise_for_status()

    def live_instances(self) -> list[dict[str, Any]]:
        pages = self.client("ec2").get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def instance_count(self) -> int:
        """Instances in any state: the local cloud is shared by the session's tests, so a test compares
        the count before and after, never against zero."""
        reservations = self.client("ec2").describe_instances()["Reservations"]
        return sum(len(r["Instances"]) for r in reservations)

    def disable_fast_snapshot_restores(self) -> None:
        """FSR off on every snapshot: a Region allows it on 5 snapshots at once, and a build published
        without a rollout keeps it on (the rollout retires the superseded one), so later tests would hit
        the limit."""
        ec2 = self.client("ec2")
        for entry in ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]:
            if entry["State"] in ("enabling", "optimizing", "enabled"):
                ec2.disable_fast_snapshot_restores(AvailabilityZones=[entry["AvailabilityZone"]],
                                                   SourceSnapshotIds=[entry["SnapshotId"]])

    def parameter(self, name: str = PARAMETER) -> str:
        return self.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]

    def publish_previous(self) -> str:
        """A real snapshot tagged and published as a previous build's cache (its metadata too), so a
        failure test can check it survives: exists, `completed`, same size and tags (previous_intact)."""
        ec2 = self.client("ec2")
        volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
        tags = {"ml-cache:pipeline": PIPELINE, "ml-cache:run-id": PREVIOUS_RUN_ID, "ml-cache:role": "cache"}
        snapshot_id = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 1})
        ec2.delete_volume(VolumeId=volume)  # a snapshot outlives its volume, as the builder's does
        snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        published = snapshot["StartTime"].isoformat(timespec="seconds")
        ec2.create_tags(Resources=[snapshot_id], Tags=[{"Key": "ml-cache:published", "Value": published}])
        ssm = self.client("ssm")
        ssm.put_parameter(Name=PARAMETER, Value=snapshot_id, Type="String", Overwrite=True)
        metadata = {"snapshot_id": snapshot_id, "snapshot_start_time": snapshot["StartTime"].isoformat(),
                    "run_id": PREVIOUS_RUN_ID, "arch": "x86_64", "platform": "linux/amd64", "images": []}
        ssm.put_parameter(Name=METADATA_PARAMETER, Value=json.dumps(metadata), Type="String", Overwrite=True)
        self.previous_snapshot = snapshot_id
        self._previous_as_published = self._previous_now()
        return snapshot_id

    def _previous_now(self) -> dict[str, Any]:
        found = self.client("ec2").describe_snapshots(
            Filters=[{"Name": "snapshot-id", "Values": [self.previous_snapshot]}])["Snapshots"]
        snapshot = found[0] if found else {}
        return {"State": snapshot.get("State"), "VolumeSize": snapshot.get("VolumeSize"),
                "Tags": sorted((t["Key"], t["Value"]) for t in snapshot.get("Tags", []))}

    def assert_previous_intact(self) -> None:
        """The previous snapshot still exists, `completed`, with the size and tags it was published with."""
        assert self._previous_now() == self._previous_as_published, self.previous_snapshot

    def delete_previous(self) -> None:
        with contextlib.suppress(self.client("ec2").exceptions.ClientError):
            self.client("ec2").delete_snapshot(SnapshotId=self.previous_snapshot)

    def write_config(self, **build: Any) -> None:
        config = yaml.safe_load((REPO / "plugins" / "ml_cache" / "defaults" / "ml_container_cache.yaml").read_text())
        subnets = self.client("ec2").describe_subnets()["Subnets"]
        config["aws"].update({"region": REGION, "subnet_ids": [subnets[0]["SubnetId"]]})
        if self.registry:  # the loopback registry speaks plain HTTP: resolve_images and the builder reach it so
            config["aws"]["registry_endpoints"] = {self.registry: f"http://{self.registry}"}
        config["build"].update({
            # without the loopback registry, a loopback ref: resolve_images must never reach the internet
            "images": [self.images.get("small", "127.0.0.1:1/ml-cache-demo/small:1.0")],
            "allowed_registries": [*config["build"]["allowed_registries"], self.registry or "127.0.0.1:1"],
            "instance_types": ["c6i.2xlarge", "m6i.2xlarge"],
            "volume_size_gib": 2,
            "fsr_availability_zones": [f"{REGION}a", f"{REGION}b"],
        })
        config["build"].update(build)
        config.setdefault("timeouts", {}).update({"poll_seconds": 1, "agent_online_seconds": 20, "build_seconds": 600,
                                   "snapshot_seconds": 120, "fsr_seconds": 60})
        self.config_path.write_text(yaml.safe_dump(config))

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the local cloud's clock forward (FSR states, LaunchTime, the Date header follow);
        returns {"now", "offset_seconds"}. Nothing puts it back."""
        answer = requests.post(f"{self.endpoint}/_devstack/clock", json={"advance_seconds": seconds}, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def billing(self) -> dict[str, Any]:
        """What AWS would bill so far on the simulated clock: {"now", "fsr", "instances", "snapshots", "totals"}."""
        answer = requests.get(f"{self.endpoint}/_devstack/billing", timeout=30)
        answer.raise_for_status()
        return answer.json()


def _data_plane_reason() -> str | None:
    from devstack.volumes import data_plane_missing

    return data_plane_missing()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh metadata DB once per session (SQLite in the session's AIRFLOW_HOME)."""
    from airflow.utils.db import resetdb

    resetdb()


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory) -> Iterator[tuple[str | None, dict[str, str]]]:
    """The loopback registry seeded with the small demo image, where the data plane exists."""
    if _data_plane_reason():
        yield None, {}
        return
    from devstack.demo_images import seed_registry
    from devstack.registry import Registry

    root = tmp_path_factory.mktemp("registry")
    with Registry(root / "storage") as registry:
        images = seed_registry(registry.address, REPO / ".devstack" / "cache", include_large=False)
        yield registry.address, images


@pytest.fixture(scope="session")
def cloud_server(tmp_path_factory, demo_registry) -> Iterator[Any]:
    from devstack import server

    registry, _ = demo_registry
    handle = server.start(port=0, home=tmp_path_factory.mktemp("devstack"),
                          plain_http_registries=[registry] if registry else [])
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def devstack_server(cloud_server) -> Any:
    """The shared registry fixtures (tests/conftest.py) run their fronts against this directory's local
    cloud: a second server in this process would take the sandboxes' home and endpoint from it."""
    return cloud_server


@pytest.fixture
def cloud(cloud_server, demo_registry, airflow_db, tmp_path, monkeypatch) -> Iterator[LocalCloud]:
    """Per test: connection + config pointing at the local cloud, faults reset, a previous snapshot published."""
    registry, images = demo_registry
    local = LocalCloud(cloud_server.endpoint, tmp_path / "ml_container_cache.yaml", registry, images)
    local.home = Path(cloud_server.home)
    connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                  "extra": {"region_name": REGION, "endpoint_url": cloud_server.endpoint}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_LOCAL", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(local.home / "kubeconfig")}}))
    monkeypatch.setenv("ML_CACHE_CONFIG", str(local.config_path))
    local.reset_faults()
    local.set_faults(agent_online_seconds=0.5, fsr_enabling_seconds=0.5, fsr_optimizing_seconds=0.5)
    iam = local.client("iam")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE)
    local.publish_previous()
    local.write_config()
    yield local
    local.reset_faults()
    for instance in local.live_instances():  # never leak into the next test
        local.client("ec2").terminate_instances(InstanceIds=[instance["InstanceId"]])
    local.disable_fast_snapshot_restores()
    local.delete_previous()


def load_dag(dag_id: str):
    """A DAG from the DAGs folder with its production retries, retried at once (dag.test waits out
    retry_delay): a failure test sees the failure survive every retry the scheduler would give it."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
    return dag


@pytest.fixture
def build_dag():
    return load_dag("ml_container_cache_build")


@pytest.fixture
def rollout_dag():
    return load_dag("ml_container_cache_rollout")


def run_dag(dag, **conf: Any):
    """dag.test() and a {task_id: state} map of the run."""
    run = dag.test(run_conf=conf or None)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return run, states


def assert_failed_with(run, states, task_id: str, cause: str, capfd, *, retried: bool = True) -> None:
    """The run FAILED at `task_id` with `cause` in the task's error: after every production retry, or
    (`retried=False`) at the first try, for a failure that waiting does not cure (AirflowFailException)."""
    assert str(run.state) == "failed"
    assert states[task_id] == "failed", states
    assert re.search(cause, capfd.readouterr().out), f"{cause!r} not in the run's output"
    (failed,) = [ti for ti in run.get_task_instances() if ti.task_id == task_id]
    assert failed.try_number == (run.dag.get_task(task_id).retries + 1 if retried else 1)


def assert_clean_failure(cloud: LocalCloud, run, states, failed_task: str, cause: str, capfd, *,
                         retried: bool = True) -> None:
    """The fault catalog's clean failure: FAILED at `failed_task` naming `cause` (after every retry, or at
    the first try), nothing published, no builder left, the parameter and the previous snapshot intact."""
    assert_failed_with(run, states, failed_task, cause, capfd, retried=retried)
    assert states["publish_snapshot"] != "success"
    assert cloud.live_instances() == []
    assert cloud.parameter() == cloud.previous_snapshot
    cloud.assert_previous_intact()


def run_snapshots(cloud: LocalCloud, run_id: str) -> list[dict[str, Any]]:
    """The snapshots a run made (by its run-id tag)."""
    return cloud.client("ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ml-cache:run-id", "Values": [run_id]}])["Snapshots"]


needs_data_plane = pytest.mark.skipif(
    os.environ.get("ML_CACHE_SKIP_DATA_PLANE") == "1" or bool(_data_plane_reason()),
    reason=f"the build step runs the real script: {_data_plane_reason() or 'ML_CACHE_SKIP_DATA_PLANE=1'}",
)


CLUSTER = "ml-cache-e2e"
NODEGROUP = "ml-cache-e2e-gpu"


@pytest.fixture
def nodes_on():
    from devstack import nodes

    nodes.enable(True)
    yield
    nodes.enable(None)


@pytest.fixture
def gpu_node_group(cloud, nodes_on):
    """One GPU node from a launch template whose cache volume has no snapshot yet (a fresh cluster)."""
    ec2, eks, iam = cloud.client("ec2"), cloud.client("eks"), cloud.client("iam")
    template = ec2.create_launch_template(
        LaunchTemplateName="ml-cache-e2e-gpu",
        LaunchTemplateData={"InstanceType": "g6e.xlarge", "BlockDeviceMappings": [
            {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 4, "VolumeType": "gp3", "DeleteOnTermination": True}}]},
    )["LaunchTemplate"]["LaunchTemplateId"]
    role = iam.create_role(RoleName="ml-cache-e2e-node", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:1]
    eks.create_cluster(name=CLUSTER, roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.create_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP, nodeRole=role, subnets=subnets,
                         launchTemplate={"id": template, "version": "1"},
                         taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
                         scalingConfig={"minSize": 1, "maxSize": 1, "desiredSize": 1})
    yield template
    eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)
    eks.delete_cluster(name=CLUSTER)
    ec2.delete_launch_template(LaunchTemplateId=template)
    iam.delete_role(RoleName="ml-cache-e2e-node")


def configure_rollout(cloud, template: str, baseline: str | None = None) -> None:
    config = yaml.safe_load(cloud.config_path.read_text())
    config["rollout"].update({"cluster_name": CLUSTER, "node_group_name": NODEGROUP, "launch_template_id": template,
                              "kubernetes_conn_id": "kubernetes_local", "max_startup_seconds": 30})
    if baseline is not None:
        config["rollout"].update({"uncached_baseline": True, "baseline_node_group_name": baseline})
    config.setdefault("timeouts", {}).update({"update_seconds": 300, "validation_seconds": 120})
    cloud.config_path.write_text(yaml.safe_dump(config))
