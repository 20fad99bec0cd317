"""The janitor DAG on the local cloud: a real run cleans up exactly what the rules allow, a dry run
changes nothing. Every situation is created through the local cloud's AWS API, as a crash would leave it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.dags.conftest import PARAMETER, load_dag, run_dag

PIPELINE = "ml-container-cache"
CLUSTER = "janitor-cluster"
NODEGROUP = "janitor-gpu"
DOCUMENT = "janitor-test-build-script"
ZONES = ["us-west-2a", "us-west-2b"]


def _tags(**tags: str) -> list[dict]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _snapshot(cloud, run_id: str, published: datetime | None = None, fsr: bool = False) -> str:
    ec2 = cloud.client("ec2")
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=8)["VolumeId"]
    tags = {"ml-cache:pipeline": PIPELINE, "ml-cache:run-id": run_id, "ml-cache:role": "cache"}
    if published:
        tags["ml-cache:published"] = published.isoformat()
    snapshot = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": _tags(**tags)}])["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot], WaiterConfig={"Delay": 1})
    ec2.delete_volume(VolumeId=volume)
    if fsr:
        ec2.enable_fast_snapshot_restores(AvailabilityZones=ZONES, SourceSnapshotIds=[snapshot])
    return snapshot


def _fsr_on(cloud, snapshot: str) -> list[str]:
    entries = cloud.client("ec2").describe_fast_snapshot_restores(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot]}])["FastSnapshotRestores"]
    return sorted(e["AvailabilityZone"] for e in entries if e["State"] != "disabled")


def _exists(cloud, snapshot: str) -> bool:
    found = cloud.client("ec2").describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snapshot]}])
    return bool(found["Snapshots"])


@pytest.fixture
def leftovers(cloud):
    """A season of weekly builds and a crash: snapshots old and new, FSR left on, an orphaned builder,
    a detached volume, a node group on launch template version 1, document versions."""
    ec2, eks, iam, ssm = (cloud.client(name) for name in ("ec2", "eks", "iam", "ssm"))
    now = datetime.now(UTC)
    snap = {
        "live": _snapshot(cloud, "scheduled__w5", now, fsr=True),
        "rollback": _snapshot(cloud, "scheduled__w4", now - timedelta(days=7), fsr=True),
        "old": _snapshot(cloud, "scheduled__w3", now - timedelta(days=14), fsr=True),  # FSR left on
        "history": _snapshot(cloud, "scheduled__w2", now - timedelta(days=21)),
        "latest": _snapshot(cloud, "scheduled__w1", now - timedelta(days=28)),
        "failed": _snapshot(cloud, "scheduled__w0"),  # a failed build's, never published
    }
    for value in (snap["history"], snap["rollback"], snap["live"]):  # the parameter's history
        ssm.put_parameter(Name=PARAMETER, Value=value, Type="String", Overwrite=True)
    device = {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 8, "VolumeType": "gp3"}}
    template = ec2.create_launch_template(LaunchTemplateName=f"janitor-{snap['live']}", LaunchTemplateData={
        "BlockDeviceMappings": [{**device, "Ebs": {**device["Ebs"], "SnapshotId": snap["rollback"]}}],
    })["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=template, LaunchTemplateData={  # $Latest, unused
        "BlockDeviceMappings": [{**device, "Ebs": {**device["Ebs"], "SnapshotId": snap["latest"]}}]})
    role = iam.create_role(RoleName=f"janitor-{snap['live']}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    eks.create_cluster(name=CLUSTER, roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.create_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP, nodeRole=role, subnets=subnets,
                         launchTemplate={"id": template, "version": "1"},
                         scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0})
    crashed = {"ml-cache:pipeline": PIPELINE, "ml-cache:run-id": "manual__crashed"}
    builder = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c6i.2xlarge",
                                TagSpecifications=[{"ResourceType": "instance", "Tags": _tags(
                                    **crashed, **{"ml-cache:role": "builder"})}])["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=4, TagSpecifications=[
        {"ResourceType": "volume", "Tags": _tags(**crashed)}])["VolumeId"]
    content = '{"schemaVersion": "2.2", "description": "v%d", "mainSteps": [{"action": "aws:runShellScript", ' \
              '"name": "run", "inputs": {"runCommand": ["echo %d"]}}]}'
    ssm.create_document(Name=DOCUMENT, Content=content % (1, 1), DocumentType="Command", DocumentFormat="JSON")
    for version in (2, 3, 4):
        ssm.update_document(Name=DOCUMENT, Content=content % (version, version), DocumentVersion="$LATEST",
                            DocumentFormat="JSON")
    ssm.update_document_default_version(Name=DOCUMENT, DocumentVersion="3")
    config = yaml.safe_load(cloud.config_path.read_text())
    config["aws"]["ssm_document"] = DOCUMENT
    config["rollout"].update({"cluster_name": CLUSTER, "node_group_name": NODEGROUP, "launch_template_id": template})
    config["timeouts"].update({"agent_online_seconds": 1, "build_seconds": 1, "snapshot_seconds": 1})
    config["lifecycle"] = {"keep_published_snapshots": 2, "parameter_history_versions": 3,
                           "keep_document_versions": 1, "unpublished_snapshot_hours": 0.0001}
    cloud.config_path.write_text(yaml.safe_dump(config))
    time.sleep(4)  # past the 3 s build deadline and the unpublished snapshots' 0.36 s
    yield {**snap, "builder": builder, "volume": volume, "template": template}
    for snapshot in snap.values():  # the next test starts from its own season
        if _exists(cloud, snapshot):
            ec2.delete_snapshot(SnapshotId=snapshot)
    eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)
    eks.delete_cluster(name=CLUSTER)
    ssm.delete_document(Name=DOCUMENT)


def _state(cloud, leftovers) -> dict:
    ec2 = cloud.client("ec2")
    builder = ec2.describe_instances(InstanceIds=[leftovers["builder"]])["Reservations"][0]["Instances"][0]
    volumes = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [leftovers["volume"]]}])["Volumes"]
    versions = cloud.client("ssm").list_document_versions(Name=DOCUMENT)["DocumentVersions"]
    return {
        "builder": builder["State"]["Name"],
        "volume": bool(volumes),
        "snapshots": {name: _exists(cloud, leftovers[name]) for name in
                      ("live", "rollback", "old", "history", "latest", "failed")},
        "fsr": {name: _fsr_on(cloud, leftovers[name]) for name in ("live", "rollback", "old")},
        "documents": sorted(v["DocumentVersion"] for v in versions),
    }


def _expected_actions(leftovers) -> set[tuple[str, str]]:
    return {("terminate_builder", leftovers["builder"]), ("delete_volume", leftovers["volume"]),
            ("disable_fast_snapshot_restore", leftovers["old"]), ("delete_snapshot", leftovers["old"]),
            ("delete_snapshot", leftovers["failed"]), ("delete_document_version", f"{DOCUMENT}:1"),
            ("delete_document_version", f"{DOCUMENT}:2")}


def _actions(report, leftovers) -> dict[tuple[str, str], dict]:
    """This test's actions (earlier DAG tests of the session may have left pipeline resources too)."""
    ours = {*leftovers.values(), f"{DOCUMENT}:1", f"{DOCUMENT}:2"}
    return {(a["action"], a["resource"]): a for a in report["actions"] if a["resource"] in ours}


def test_janitor_cleans_up_what_the_rules_allow_and_reports_the_savings(cloud, leftovers, capfd):
    run, states = run_dag(load_dag("ml_container_cache_janitor"))
    assert str(run.state) == "success", states
    state = _state(cloud, leftovers)
    assert state["builder"] in ("shutting-down", "terminated") and state["volume"] is False
    # retention 2 keeps live + rollback; history and $Latest are referenced; old and failed go
    assert state["snapshots"] == {"live": True, "rollback": True, "old": False, "history": True, "latest": True,
                                  "failed": False}
    assert state["fsr"] == {"live": ZONES, "rollback": ZONES, "old": []}  # FSR off before deletion
    assert state["documents"] == ["3", "4"]  # the default and the newest
    report = run.get_task_instance("report_cleanup").xcom_pull(task_ids="report_cleanup")
    done = _actions(report, leftovers)
    assert set(done) == _expected_actions(leftovers)
    assert {a["outcome"] for a in done.values()} == {"done"}
    assert "run manual__crashed is unknown to Airflow" in done[("terminate_builder", leftovers["builder"])]["reason"]
    fsr_saved = done[("disable_fast_snapshot_restore", leftovers["old"])]["monthly_savings_usd"]
    assert fsr_saved == pytest.approx(2 * 0.75 * 730)
    assert report["total_monthly_savings_usd"] > fsr_saved and report["dry_run"] is False
    kept = {k["resource"]: k["reason"] for k in report["kept"] if "referenced" in k["reason"]}
    assert "recent history" in kept[leftovers["history"]] and "$Latest" in kept[leftovers["latest"]]
    assert "total" in capfd.readouterr().out


def test_dry_run_changes_nothing_and_says_what_it_would_do(cloud, leftovers):
    from airflow.utils.session import create_session

    from ml_cache.ui.gather import janitor_runs

    before = _state(cloud, leftovers)
    run, states = run_dag(load_dag("ml_container_cache_janitor"), dry_run=True)
    assert str(run.state) == "success" and states["apply_cleanup"] == "skipped", states
    assert _state(cloud, leftovers) == before
    report = run.get_task_instance("report_cleanup").xcom_pull(task_ids="report_cleanup")
    assert report["dry_run"] is True and set(_actions(report, leftovers)) == _expected_actions(leftovers)
    assert {a["outcome"] for a in report["actions"]} == {"would do (dry run)"}
    assert report["total_monthly_savings_usd"] > 1095
    with create_session() as session:  # the ML cache page reads the same report, as the run stored it
        [seen] = [page_run for page_run in janitor_runs(session) if page_run.run_id == run.run_id]
    assert seen.report == report and seen.state == "success"
