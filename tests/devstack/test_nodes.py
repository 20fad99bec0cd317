"""GPU nodes of the local cloud: restored from the launch template's snapshot, replaced by updates.

Real loop devices, the node's real mount script, a containerd per node and the kubelet stand-in;
pods are watched through the kubernetes client as the rollout DAG will.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import nodes, sandbox, volumes
from devstack.containerd import Containerd, write_config
from devstack.demo_images import default_cache_dir, seed_registry
from devstack.process import free_port
from devstack.registry import Registry
from tests.devstack.conftest import wait_for

MISSING = volumes.data_plane_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[Registry, str]]:
    base = Path(tempfile.mkdtemp(prefix="nodes-r-", dir="/tmp"))
    previous = os.environ.get("DEVSTACK_PLAIN_HTTP_REGISTRIES")
    try:
        with Registry(base / "storage") as running:
            refs = seed_registry(running.address, default_cache_dir(), include_large=False)
            os.environ["DEVSTACK_PLAIN_HTTP_REGISTRIES"] = running.address
            yield running, refs["small"]
    finally:
        if previous is None:
            os.environ.pop("DEVSTACK_PLAIN_HTTP_REGISTRIES", None)
        else:
            os.environ["DEVSTACK_PLAIN_HTTP_REGISTRIES"] = previous
        shutil.rmtree(base, ignore_errors=True)


def build_cache_volume(path: Path, ref: str, plain_http: str, size_gib: int = 1) -> None:
    """An XFS volume file whose containerd (namespace k8s.io) holds `ref`, as the build DAG leaves it."""
    volumes.create_volume_file(path, size_gib)
    volumes.make_xfs(path)
    work = Path(tempfile.mkdtemp(prefix="nodes-b-", dir="/tmp"))
    try:
        volumes.mount(path, work / "root")
        write_config(work / "root", work / "state", work / "c.sock", work / "config.toml")
        with Containerd(work / "root", work / "state", work / "c.sock", work / "config.toml") as builder:
            pulled = builder.ctr("images", "pull", "--plain-http", ref, timeout=300)
            assert pulled.returncode == 0, pulled.stderr
            assert plain_http in ref
    finally:
        volumes.cleanup_under(work)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def gpu(cloud, registry) -> Iterator[dict[str, Any]]:
    """A cluster with two GPU node groups (1 node each): one restored from a snapshot holding the
    small demo image, one from a placeholder template (blank volume)."""
    yield from gpu_cluster(cloud, registry[0].address, registry[1], volume_gib=1)


def gpu_cluster(cloud: Any, registry_address: str, ref: str, volume_gib: int) -> Iterator[dict[str, Any]]:
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=cloud.endpoint, region_name="us-west-2",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    ec2, eks, iam = client("ec2"), client("eks"), client("iam")
    nodes.enable(True)
    name = f"gpu-{time.monotonic_ns()}"
    volume = ec2.create_volume(Size=volume_gib, AvailabilityZone="us-west-2a")["VolumeId"]
    build_cache_volume(sandbox.volume_file(volume), ref, registry_address, volume_gib)
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot], WaiterConfig={"Delay": 1})
    ec2.delete_volume(VolumeId=volume)

    def template_data(snapshot_id: str | None) -> dict[str, Any]:
        ebs = {"VolumeSize": volume_gib + 1, "VolumeType": "gp3", "DeleteOnTermination": True}
        if snapshot_id:
            ebs["SnapshotId"] = snapshot_id
        return {"InstanceType": "g5.xlarge", "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": ebs}]}

    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24", AvailabilityZone="us-west-2b")["Subnet"]
    cached = ec2.create_launch_template(LaunchTemplateName=f"{name}-cached",
                                        LaunchTemplateData=template_data(snapshot))["LaunchTemplate"]
    blank = ec2.create_launch_template(LaunchTemplateName=f"{name}-blank",
                                       LaunchTemplateData=template_data(None))["LaunchTemplate"]
    eks.create_cluster(name=name, roleArn=role, resourcesVpcConfig={"subnetIds": [subnet["SubnetId"]]})
    for group, template in (("cached", cached), ("blank", blank)):
        eks.create_nodegroup(clusterName=name, nodegroupName=group, nodeRole=role, subnets=[subnet["SubnetId"]],
                             scalingConfig={"minSize": 1, "maxSize": 2, "desiredSize": 1},
                             labels={"ml-cache/enabled": "true"}, taints=[GPU_TAINT],
                             launchTemplate={"id": template["LaunchTemplateId"], "version": "1"})
    info = {"ec2": ec2, "eks": eks, "cluster": name, "ref": ref, "snapshot": snapshot,
            "cached_template": cached["LaunchTemplateId"], "blank_template": blank["LaunchTemplateId"],
            "home": cloud.home}
    try:
        yield info
    finally:
        nodes.enable(True)  # the reconciler removes the nodes
        for group in ("cached", "blank"):
            eks.delete_nodegroup(clusterName=name, nodegroupName=group)
        wait_for(lambda: not [n for n in nodes.all_nodes() if n.cluster == name], 120, "nodes removed")
        nodes.enable(None)


def ready_nodes(cluster: str, group: str, version: str | None = None) -> list[nodes.Node]:
    found = [n for n in nodes.all_nodes() if n.cluster == cluster and n.nodegroup == group
             and (version is None or n.template_version == version)]
    errors = [n.error for n in found if n.error]
    assert not errors, errors
    return [n for n in found if n.ready]


@pytest.fixture(scope="module")
def core(cloud) -> Any:
    from kubernetes import client, config

    from devstack import k8s

    assert k8s.current() is not None
    return client.CoreV1Api(config.new_client_from_config(config_file=str(k8s.current().kubeconfig)))


def run_pod(core: Any, name: str, node: str, image: str, timeout: float = 300) -> tuple[Any, list[Any]]:
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "cache-check"}},
        "spec": {"nodeName": node, "restartPolicy": "Never", "tolerations": [TOLERATION],
                 "containers": [{"name": "check", "image": image, "imagePullPolicy": "IfNotPresent"}]}})
    pod = wait_for(lambda: (p := core.read_namespaced_pod(name, "default")).status.phase in ("Succeeded", "Failed")
                   and p, timeout, f"pod {name} finished")
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name},"
                                        "involvedObject.kind=Pod").items
    return pod, sorted(events, key=lambda e: e.event_time)


def stage(events: list[Any], reason: str) -> Any:
    return next(e for e in events if e.reason == reason)


def test_nodes_boot_from_the_launch_template_snapshot(gpu) -> None:
    started = time.monotonic()
    node = wait_for(lambda: ready_nodes(gpu["cluster"], "cached"), 120, "cached node Ready")[0]
    print(f"\nnode boot (instance, volume copy, mount script, containerd): {node.boot_seconds}s "
          f"(waited {time.monotonic() - started:.1f}s)")
    instance = gpu["ec2"].describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["eks:cluster-name"] == gpu["cluster"] and tags["eks:nodegroup-name"] == "cached"
    # launched from EKS's copy of the template; the node (its labels) keeps the source
    (copy,) = gpu["ec2"].describe_launch_templates(LaunchTemplateIds=[tags["aws:ec2launchtemplate:id"]])[
        "LaunchTemplates"]
    assert copy["LaunchTemplateName"].startswith("eks-") and copy["LaunchTemplateId"] != gpu["cached_template"]
    assert tags["aws:ec2launchtemplate:version"] == "1"
    assert (node.template_id, node.template_version) == (gpu["cached_template"], "1")
    assert tags[f"kubernetes.io/cluster/{gpu['cluster']}"] == "owned"
    assert instance["InstanceType"] == "g5.xlarge" and instance["Placement"]["AvailabilityZone"] == "us-west-2b"
    data = next(m for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdb")
    volume = gpu["ec2"].describe_volumes(VolumeIds=[data["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["SnapshotId"] == gpu["snapshot"]
    root = node.root / "var" / "lib" / "containerd"
    assert volumes.is_mounted(root)
    assert "mounted nvme-Amazon_Elastic_Block_Store_vol" in node.mount_log
    assert gpu["ref"] in node.ctr("images", "ls", "-q").stdout.split()
    blank = wait_for(lambda: ready_nodes(gpu["cluster"], "blank"), 120, "blank node Ready")[0]
    assert "is blank (no snapshot published yet): formatting it as XFS" in blank.mount_log
    assert blank.ctr("images", "ls", "-q").stdout.split() == []


def test_cached_node_starts_without_pulling_and_blank_node_pulls(gpu, core) -> None:
    cached = wait_for(lambda: ready_nodes(gpu["cluster"], "cached"), 120, "cached node Ready")[0]
    blank = wait_for(lambda: ready_nodes(gpu["cluster"], "blank"), 120, "blank node Ready")[0]
    hit, hit_events = run_pod(core, "cached-check", cached.name, gpu["ref"])
    miss, miss_events = run_pod(core, "uncached-check", blank.name, gpu["ref"])
    try:
        assert hit.status.phase == "Succeeded" and miss.status.phase == "Succeeded"
        assert [e.reason for e in hit_events] == ["Pulled", "Created", "Started"]
        assert stage(hit_events, "Pulled").message == f'Container image "{gpu["ref"]}" already present on machine'
        assert [e.reason for e in miss_events] == ["Pulling", "Pulled", "Created", "Started"]
        pulled = stage(miss_events, "Pulled").message
        assert pulled.startswith(f'Successfully pulled image "{gpu["ref"]}" in ') and "Image size: " in pulled
        assert int(pulled.rsplit("Image size: ", 1)[1].split()[0]) > 100_000
        assert gpu["ref"] in blank.ctr("images", "ls", "-q").stdout.split()  # the pull was real
        # the client turns a text/plain body into str(bytes) unless the raw response is read
        log = core.read_namespaced_pod_log("cached-check", "default", _preload_content=False).data.decode()
        assert log.strip() == "ready"
        hit_ready = (stage(hit_events, "Started").event_time - stage(hit_events, "Pulled").event_time)
        miss_ready = (stage(miss_events, "Started").event_time - stage(miss_events, "Pulling").event_time)
        print(f"\nimage ready -> started: cached {hit_ready.total_seconds():.3f}s; "
              f"pulling -> started: uncached {miss_ready.total_seconds():.3f}s")
        assert miss_ready > hit_ready
        conditions = {c.type: c for c in hit.status.conditions}
        assert {"PodScheduled", "Initialized", "PodReadyToStartContainers", "ContainersReady", "Ready"} <= set(
            conditions)
        terminated = hit.status.container_statuses[0].state.terminated
        assert terminated.exit_code == 0 and terminated.finished_at >= terminated.started_at
    finally:
        for name in ("cached-check", "uncached-check"):
            core.delete_namespaced_pod(name, "default")



def test_blank_node_pulls_private_images_with_the_nodes_credentials(gpu, core, private_registry,
                                                                    ecr_registry) -> None:
    """The uncached baseline: kubelet pulls a private (bearer) and an ECR image as a real node would."""
    blank = wait_for(lambda: ready_nodes(gpu["cluster"], "blank"), 120, "blank node Ready")[0]
    pods = {"private-pull": private_registry.image, "ecr-pull": ecr_registry.image}
    try:
        for name, image in pods.items():
            pod, events = run_pod(core, name, blank.name, image)
            assert pod.status.phase == "Succeeded", [(e.reason, e.message) for e in events]
            assert [e.reason for e in events] == ["Pulling", "Pulled", "Created", "Started"]
            assert image in blank.ctr("images", "ls", "-q").stdout.split()
    finally:
        for name in pods:
            core.delete_namespaced_pod(name, "default")

def second_version(gpu: dict[str, Any]) -> None:
    """Version 2: the same cache snapshot on a bigger instance type (every field given, as the DAG does)."""
    ec2 = gpu["ec2"]
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=gpu["cached_template"])
    if len(versions["LaunchTemplateVersions"]) < 2:
        ec2.create_launch_template_version(LaunchTemplateId=gpu["cached_template"], LaunchTemplateData={
            "InstanceType": "g5.2xlarge", "BlockDeviceMappings": [{"DeviceName": "/dev/xvdb", "Ebs": {
                "VolumeSize": 2, "VolumeType": "gp3", "DeleteOnTermination": True, "SnapshotId": gpu["snapshot"]}}]})


def update_to(gpu: dict[str, Any], version: str, token: str) -> str:
    return gpu["eks"].update_nodegroup_version(
        clusterName=gpu["cluster"], nodegroupName="cached", clientRequestToken=token,
        launchTemplate={"id": gpu["cached_template"], "version": version})["update"]["id"]


def describe_update(gpu: dict[str, Any], update_id: str) -> dict[str, Any]:
    return gpu["eks"].describe_update(name=gpu["cluster"], nodegroupName="cached", updateId=update_id)["update"]


def test_update_fault_fails_and_leaves_nodes_alone(gpu, set_faults) -> None:
    before = wait_for(lambda: ready_nodes(gpu["cluster"], "cached"), 120, "cached node Ready")
    second_version(gpu)
    set_faults(nodegroup_update_seconds=0.3, nodegroup_update_failed="NodeCreationFailure")
    update_id = update_to(gpu, "2", "fault-1")
    update = wait_for(lambda: (u := describe_update(gpu, update_id))["status"] != "InProgress" and u, 30, "failed")
    assert update["status"] == "Failed" and update["errors"][0]["errorCode"] == "NodeCreationFailure"
    time.sleep(1)
    after = ready_nodes(gpu["cluster"], "cached")
    assert [n.instance_id for n in after] == [n.instance_id for n in before]
    assert after[0].template_version == "1"


def test_update_replaces_nodes_before_it_succeeds(gpu, set_faults) -> None:
    old = wait_for(lambda: ready_nodes(gpu["cluster"], "cached"), 120, "cached node Ready")[0]
    second_version(gpu)
    set_faults(nodegroup_update_seconds=0.1)
    started = time.monotonic()
    update_id = update_to(gpu, "2", "roll-1")
    assert describe_update(gpu, update_id)["status"] == "InProgress"
    new = wait_for(lambda: ready_nodes(gpu["cluster"], "cached", "2"), 120, "new-version node Ready")[0]
    update = wait_for(lambda: (u := describe_update(gpu, update_id))["status"] != "InProgress" and u, 120, "done")
    print(f"\nrolling update: {time.monotonic() - started:.1f}s (new node boot {new.boot_seconds}s)")
    assert update["status"] == "Successful"
    assert [n.instance_id for n in nodes.nodes_of(old.account, old.region, gpu["cluster"], "cached")] == [
        new.instance_id]
    ec2 = gpu["ec2"]
    wait_for(lambda: ec2.describe_instances(InstanceIds=[old.instance_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "terminated", 30, "old instance terminated")
    instance = ec2.describe_instances(InstanceIds=[new.instance_id])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["aws:ec2launchtemplate:id"] != gpu["cached_template"]  # EKS's copy, its version 2
    assert tags["aws:ec2launchtemplate:version"] == "2" and new.template_version == "2"
    assert instance["InstanceType"] == "g5.2xlarge"
    assert not volumes.is_mounted(old.root / "var" / "lib" / "containerd")
    assert old.containerd is not None and old.containerd.process is not None
    assert old.containerd.process.poll() is not None
    group = gpu["eks"].describe_nodegroup(clusterName=gpu["cluster"], nodegroupName="cached")["nodegroup"]
    assert group["launchTemplate"]["version"] == "2" and group["status"] == "ACTIVE"
    assert gpu["ref"] in new.ctr("images", "ls", "-q").stdout.split()
    assert "mounted nvme-Amazon_Elastic_Block_Store_vol" in new.mount_log


def wait_update(gpu: dict[str, Any], group: str, update_id: str) -> dict[str, Any]:
    return wait_for(lambda: (u := gpu["eks"].describe_update(name=gpu["cluster"], nodegroupName=group,
                                                             updateId=update_id)["update"])["status"] != "InProgress"
                    and u, 120, f"update {update_id} done")


def test_a_group_scaled_to_zero_scales_up_from_eks_copy_of_its_launch_template(gpu, core, set_faults) -> None:
    """EKS launches from its own copy of the template (other id, own version numbers); only the node
    labels name the source template and version. UpdateNodegroupConfig is a ConfigUpdate that ends
    Successful once the nodes match the new size."""
    ec2, eks, cluster = gpu["ec2"], gpu["eks"], gpu["cluster"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=gpu["blank_template"],
                                                 Versions=["1"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    source = str(ec2.create_launch_template_version(LaunchTemplateId=gpu["blank_template"], LaunchTemplateData=data)[
        "LaunchTemplateVersion"]["VersionNumber"])
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName="blank")["nodegroup"]
    eks.create_nodegroup(clusterName=cluster, nodegroupName="scaled", nodeRole=group["nodeRole"],
                         subnets=group["subnets"], scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0},
                         taints=[GPU_TAINT], launchTemplate={"id": gpu["blank_template"], "version": source})
    try:
        set_faults(nodegroup_update_seconds=0.1)
        with pytest.raises(eks.exceptions.InvalidParameterException, match="desiredSize <= maxSize"):
            eks.update_nodegroup_config(clusterName=cluster, nodegroupName="scaled",
                                        scalingConfig={"minSize": 1, "maxSize": 1, "desiredSize": 2})
        update = eks.update_nodegroup_config(clusterName=cluster, nodegroupName="scaled",
                                             scalingConfig={"minSize": 1, "maxSize": 1, "desiredSize": 1})["update"]
        assert update["type"] == "ConfigUpdate" and update["status"] == "InProgress"
        assert wait_update(gpu, "scaled", update["id"])["status"] == "Successful"
        (node,) = ready_nodes(cluster, "scaled")
        instance = ec2.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        (copy,) = ec2.describe_launch_templates(LaunchTemplateIds=[tags["aws:ec2launchtemplate:id"]])[
            "LaunchTemplates"]
        assert copy["LaunchTemplateName"].startswith("eks-") and copy["LaunchTemplateId"] != gpu["blank_template"]
        assert tags["aws:ec2launchtemplate:version"] == "1" != source
        labels = core.read_node(node.name).metadata.labels
        assert labels["eks.amazonaws.com/sourceLaunchTemplateId"] == gpu["blank_template"]
        assert labels["eks.amazonaws.com/sourceLaunchTemplateVersion"] == source
        assert labels["eks.amazonaws.com/nodegroup"] == "scaled"
        update = eks.update_nodegroup_config(clusterName=cluster, nodegroupName="scaled",
                                             scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0})["update"]
        assert wait_update(gpu, "scaled", update["id"])["status"] == "Successful"
        assert not [n for n in nodes.all_nodes() if n.cluster == cluster and n.nodegroup == "scaled"]
    finally:
        eks.delete_nodegroup(clusterName=cluster, nodegroupName="scaled")


def test_removed_nodes_leave_no_mounts_loops_or_containerd(gpu) -> None:
    node = wait_for(lambda: ready_nodes(gpu["cluster"], "blank"), 120, "blank node Ready")[0]
    pid = node.containerd.pid if node.containerd else None
    nodes.remove_node(node)
    assert pid is not None and (not Path(f"/proc/{pid}").exists() or _zombie(pid))
    instances = str(Path(gpu["home"]) / "instances" / node.instance_id)
    assert not [m for m in volumes.mounts() if m["target"].startswith(instances)]
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True).stdout
    box = sandbox.get(node.instance_id)
    assert box is not None and all(str(v.path) not in loops for v in box.volumes)
    assert all(not v.path.exists() for v in box.volumes)


def _zombie(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_update_whose_nodes_never_join_ends_failed(gpu, set_faults, monkeypatch) -> None:
    """Version 3 gives nodes two blank data volumes: the mount script cannot tell which is the
    cache and fails, the node never gets Ready, the update ends NodeCreationFailure, the old node stays."""
    old = wait_for(lambda: ready_nodes(gpu["cluster"], "cached"), 120, "cached node Ready")[0]
    ebs = {"VolumeSize": 1, "DeleteOnTermination": True}
    gpu["ec2"].create_launch_template_version(LaunchTemplateId=gpu["cached_template"], LaunchTemplateData={
        "InstanceType": "g5.xlarge", "BlockDeviceMappings": [
            {"DeviceName": "/dev/xvdb", "Ebs": ebs}, {"DeviceName": "/dev/xvdc", "Ebs": ebs}]})
    monkeypatch.setenv("DEVSTACK_NODEGROUP_UPDATE_TIMEOUT_SECONDS", "4")
    set_faults(nodegroup_update_seconds=0.1)
    update_id = update_to(gpu, "3", "never-joins")
    update = wait_for(lambda: (u := describe_update(gpu, update_id))["status"] != "InProgress" and u, 60, "failed")
    assert update["status"] == "Failed"
    assert update["errors"][0]["errorCode"] == "NodeCreationFailure"
    assert update["errors"][0]["errorMessage"] == "Instances failed to join the kubernetes cluster"
    stuck = update["errors"][0]["resourceIds"][0]
    assert stuck.startswith("i-") and stuck != old.instance_id
    group = gpu["eks"].describe_nodegroup(clusterName=gpu["cluster"], nodegroupName="cached")["nodegroup"]
    assert group["launchTemplate"]["version"] == "2"
    wait_for(lambda: [n.instance_id for n in nodes.nodes_of(old.account, old.region, gpu["cluster"], "cached")]
             == [old.instance_id], 30, "the node that never joined is removed")
    assert old.ready


def test_server_stop_leaves_no_mounts_loops_or_containerd(registry, tmp_path) -> None:
    """`python -m devstack up --cloud-only` with DEVSTACK_NODES=1, a node and a running pod, then `down`."""
    import json
    import sys
    import urllib.request

    import boto3
    from kubernetes import client, config

    home = tmp_path / "h"
    port = free_port()
    env = {**os.environ, "DEVSTACK_NODES": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devstack", *args, "--home", str(home)], cwd=sandbox.REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=180, check=False)

    assert cli("up", "--cloud-only", "--port", str(port)).returncode == 0
    endpoint = f"http://127.0.0.1:{port}"
    try:
        kw = {"endpoint_url": endpoint, "region_name": "us-west-2", "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing"}
        ec2, eks, iam = boto3.client("ec2", **kw), boto3.client("eks", **kw), boto3.client("iam", **kw)
        role = iam.create_role(RoleName="n", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        subnet = ec2.create_subnet(VpcId=ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"],
                                   CidrBlock="10.50.1.0/24", AvailabilityZone="us-west-2a")["Subnet"]["SubnetId"]
        template = ec2.create_launch_template(LaunchTemplateName="n", LaunchTemplateData={
            "InstanceType": "g5.xlarge", "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": True}}]})
        eks.create_cluster(name="c", roleArn=role, resourcesVpcConfig={"subnetIds": [subnet]})
        eks.create_nodegroup(clusterName="c", nodegroupName="gpu", nodeRole=role, subnets=[subnet],
                             scalingConfig={"minSize": 1, "maxSize": 1, "desiredSize": 1},
                             launchTemplate={"id": template["LaunchTemplate"]["LaunchTemplateId"], "version": "1"})

        def state() -> dict[str, Any]:
            with urllib.request.urlopen(endpoint + "/_devstack/state", timeout=10) as answer:  # noqa: S310
                return json.load(answer)

        instance_id = wait_for(lambda: [n for n in state()["nodes"] if n["ready"]], 120, "node Ready")[0]["instance_id"]
        core = client.CoreV1Api(config.new_client_from_config(config_file=state()["kubernetes"]["kubeconfig"]))
        core.create_namespaced_pod("default", {"metadata": {"name": "sleeper"}, "spec": {
            "containers": [{"name": "main", "image": registry[1], "command": ["sleep", "300"]}]}})
        wait_for(lambda: core.read_namespaced_pod("sleeper", "default").status.phase == "Running", 120, "Running")
        assert [m for m in volumes.mounts() if m["target"].startswith(str(home.resolve()))]
    finally:
        assert cli("down").returncode == 0
    assert not [m for m in volumes.mounts() if m["target"].startswith(str(home.resolve()))]
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True).stdout
    assert str(home.resolve()) not in loops
    survivors = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            mine = (str(home.resolve()), instance_id, "sleeper-main-")  # containerd, its socket dir, the shim
            if any(part in cmdline for part in mine) and not _zombie(int(proc.name)):
                survivors.append(cmdline)
    assert survivors == []


@pytest.mark.skipif(os.environ.get("DEVSTACK_LARGE_IMAGE_TESTS") != "1",
                    reason="set DEVSTACK_LARGE_IMAGE_TESTS=1: builds a 4 GiB cache volume with the 1 GiB demo image")
def test_large_image_cached_start_versus_uncached_pull(cloud, tmp_path) -> None:
    """The 1 GiB demo image: node boot, then cached versus uncached pod start (Scheduled -> Started)."""
    from kubernetes import client, config

    from devstack import k8s
    from devstack.demo_images import DEMO_IMAGES

    base = Path(tempfile.mkdtemp(prefix="nodes-l-", dir="/tmp"))
    previous = os.environ.get("DEVSTACK_PLAIN_HTTP_REGISTRIES")
    try:
        with Registry(base / "storage") as running:
            ref = seed_registry(running.address, default_cache_dir(), images={"large": DEMO_IMAGES["large"]})["large"]
            os.environ["DEVSTACK_PLAIN_HTTP_REGISTRIES"] = running.address
            started = time.monotonic()
            clusters = gpu_cluster(cloud, running.address, ref, volume_gib=4)
            gpu = next(clusters)
            print(f"\ncache volume built and snapshotted: {time.monotonic() - started:.1f}s")
            try:
                cached = wait_for(lambda: ready_nodes(gpu["cluster"], "cached"), 300, "cached node")[0]
                blank = wait_for(lambda: ready_nodes(gpu["cluster"], "blank"), 300, "blank node")[0]
                print(f"node boot: cached {cached.boot_seconds}s, blank {blank.boot_seconds}s")
                core = client.CoreV1Api(config.new_client_from_config(config_file=str(k8s.current().kubeconfig)))
                hit, hit_events = run_pod(core, "large-cached", cached.name, ref, timeout=900)
                miss, miss_events = run_pod(core, "large-uncached", blank.name, ref, timeout=900)
                for name in ("large-cached", "large-uncached"):
                    core.delete_namespaced_pod(name, "default")
                assert hit.status.phase == miss.status.phase == "Succeeded"
                assert stage(hit_events, "Pulled").message.endswith("already present on machine")
                assert stage(miss_events, "Pulling")
                first = {"cached": hit_events[0].event_time, "uncached": miss_events[0].event_time}
                hit_start = (stage(hit_events, "Started").event_time - first["cached"]).total_seconds()
                miss_start = (stage(miss_events, "Started").event_time - first["uncached"]).total_seconds()
                print(f"first kubelet event -> Started: cached {hit_start:.3f}s, uncached {miss_start:.3f}s "
                      f"({miss_start / max(hit_start, 0.001):.0f}x); {stage(miss_events, 'Pulled').message}")
                assert miss_start > 10 * hit_start
            finally:
                next(clusters, None)
    finally:
        if previous is None:
            os.environ.pop("DEVSTACK_PLAIN_HTTP_REGISTRIES", None)
        else:
            os.environ["DEVSTACK_PLAIN_HTTP_REGISTRIES"] = previous
        shutil.rmtree(base, ignore_errors=True)


def test_a_node_group_created_again_has_none_of_the_deleted_ones_updates(gpu, set_faults) -> None:
    """DescribeUpdate/ListUpdates answer for the node group, not its name: a namesake starts without the
    deleted group's updates, and one still InProgress does not make it ResourceInUse."""
    eks, cluster = gpu["eks"], gpu["cluster"]
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName="blank")["nodegroup"]

    def create() -> None:
        eks.create_nodegroup(clusterName=cluster, nodegroupName="again", nodeRole=group["nodeRole"],
                             subnets=group["subnets"], scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0},
                             launchTemplate={"id": gpu["blank_template"], "version": "1"})

    set_faults(nodegroup_update_seconds=60)
    create()
    eks.update_nodegroup_version(clusterName=cluster, nodegroupName="again",
                                 launchTemplate={"id": gpu["blank_template"], "version": "1"})
    eks.delete_nodegroup(clusterName=cluster, nodegroupName="again")
    create()
    try:
        assert eks.list_updates(name=cluster, nodegroupName="again")["updateIds"] == []
        update = eks.update_nodegroup_config(clusterName=cluster, nodegroupName="again",
                                             scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0})["update"]
        assert eks.list_updates(name=cluster, nodegroupName="again")["updateIds"] == [update["id"]]
    finally:
        eks.delete_nodegroup(clusterName=cluster, nodegroupName="again")
