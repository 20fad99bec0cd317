"""The Airflow worker policy, as Terraform renders it, allows each DAG call under its conditions only.

The document is rendered by the real module (modules/airflow-policy) through `terraform apply`
of a tiny configuration, then evaluated with tf_iam_eval: no AWS and no provider needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ec2_authorization import Account, run_instances_calls
from tf_iam_eval import Request, allowed_actions, is_allowed
from tf_runner import Terraform, copy_tree, skip_reason

from ml_cache.builder_instance import BuilderLaunch, builder_request
from ml_cache.operators.builder import builder_tags

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

ACCOUNT = "111122223333"
REGION = "us-west-2"
PIPELINE = "ml-container-cache"
CLUSTER = "ml-container-cache"
NODE_GROUP = "ml-container-cache-gpu"
LAUNCH_TEMPLATE = "lt-0123456789abcdef0"
VPC_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-0abc"
BUILDER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ml-container-cache-builder"
BUILDER_PROFILE = f"arn:aws:iam::{ACCOUNT}:instance-profile/ml-container-cache-builder"
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SUBNETS = ["subnet-0abc", "subnet-0abd"]
SECURITY_GROUP = "sg-0abc"
INSTANCE_TYPES = ["c6i.2xlarge", "m6i.2xlarge"]
EKS_AMI_OWNER = "602401143452"
# The module's inputs, as the root module wires them (airflow_iam.tf); test_airflow_policy_sizes uses them too.
POLICY_INPUTS: dict[str, Any] = {
    "partition": "aws", "region": REGION, "account_id": ACCOUNT, "pipeline": PIPELINE,
    "parameter_names": [f"/{PIPELINE}/snapshot-id", f"/{PIPELINE}/snapshot-metadata"],
    "ssm_document_name": f"{PIPELINE}-build", "builder_role_arn": BUILDER_ROLE,
    "builder_instance_profile_arn": BUILDER_PROFILE, "vpc_arn": VPC_ARN, "builder_subnet_ids": SUBNETS,
    "builder_security_group_ids": [SECURITY_GROUP], "builder_instance_types": INSTANCE_TYPES,
    "builder_ami_owner_ids": [EKS_AMI_OWNER], "cluster_name": CLUSTER, "node_group_name": NODE_GROUP,
    "launch_template_id": LAUNCH_TEMPLATE,
}

EC2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
SSM = f"arn:aws:ssm:{REGION}:{ACCOUNT}"
EKS = f"arn:aws:eks:{REGION}:{ACCOUNT}"
SNAPSHOT = f"arn:aws:ec2:{REGION}::snapshot/snap-0abc"
PARENT_SNAPSHOT = f"arn:aws:ec2:{REGION}::snapshot/snap-0parent"
INSTANCE = f"{EC2}:instance/i-0abc"
VOLUME = f"{EC2}:volume/vol-0abc"
PARAMETER = f"{SSM}:parameter/ml-container-cache/snapshot-id"
METADATA_PARAMETER = f"{SSM}:parameter/ml-container-cache/snapshot-metadata"
DOCUMENT = f"{SSM}:document/ml-container-cache-build"
CLUSTER_ARN = f"{EKS}:cluster/{CLUSTER}"
NODE_GROUP_ARN = f"{EKS}:nodegroup/{CLUSTER}/{NODE_GROUP}/6ec5a4f2-0000-0000-0000-000000000000"
SYSTEM_NODE_GROUP_ARN = f"{EKS}:nodegroup/{CLUSTER}/ml-container-cache-system/7fd6b5a3-0000-0000-0000-000000000000"
BASELINE_NODE_GROUP = "ml-container-cache-gpu-baseline"  # terraform/node_groups.tf, var.uncached_baseline
BASELINE_NODE_GROUP_ARN = f"{EKS}:nodegroup/{CLUSTER}/{BASELINE_NODE_GROUP}/8ae7c6b4-0000-0000-0000-000000000000"
AMI_PARAMETER = (
    f"arn:aws:ssm:{REGION}::parameter/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/"
    "standard/recommended/image_id"
)

OUR_REQUEST_TAGS = {
    "aws:RequestTag/ml-cache:pipeline": PIPELINE,
    "aws:RequestTag/ml-cache:run-id": "manual__2026-11-29T00:00:00",
    "aws:RequestTag/Name": f"{PIPELINE}-builder",
}
OUR_RESOURCE = {"aws:ResourceTag/ml-cache:pipeline": PIPELINE}
BUILDER_RESOURCE = {**OUR_RESOURCE, "aws:ResourceTag/ml-cache:role": "builder"}
IN_OUR_VPC = {"ec2:Vpc": VPC_ARN}
BUILDER_FOR_SSM = {"ssm:resourceTag/ml-cache:pipeline": PIPELINE, "ssm:resourceTag/ml-cache:role": "builder"}
# A node as Terraform tags it (pipeline tag, no role): what the builder statements must never reach.
NODE_RESOURCE = {"aws:ResourceTag/ml-cache:pipeline": PIPELINE, "aws:ResourceTag/Name": f"{PIPELINE}-gpu"}

# The producer's real output: what LaunchBuilderOperator sends, every (instance type, subnet) candidate.
LAUNCH = BuilderLaunch(
    pipeline=PIPELINE, instance_types=INSTANCE_TYPES, subnet_ids=SUBNETS, security_group_ids=[SECURITY_GROUP],
    instance_profile="ml-container-cache-builder", kms_key_id=None, volume_iops=3000, volume_throughput_mibps=250,
    build_seconds=7200,
)
WHERE = Account(account=ACCOUNT, region=REGION, vpc_arn=VPC_ARN, profile_arn=BUILDER_PROFILE,
                role_arn=BUILDER_ROLE, ami_owner=EKS_AMI_OWNER)


def builder_requests() -> list[dict[str, Any]]:
    tags = builder_tags(PIPELINE, "manual__2026-11-29T00:00:00")
    return [builder_request(LAUNCH, "ami-0abc", 100, instance_type, subnet, tags, base_snapshot_id="snap-0base")
            for instance_type, subnet in LAUNCH.candidates()]


LAUNCH_CALLS = run_instances_calls(builder_requests()[0], WHERE)
BUILDER_INSTANCE = LAUNCH_CALLS[0].context  # the instance authorization of the real request
PUBLISHED_TAG = "ml-cache:published"
MARK_PUBLISHED = {
    **OUR_RESOURCE, "aws:TagKeys": [PUBLISHED_TAG], f"aws:RequestTag/{PUBLISHED_TAG}": "2026-11-29T00:00:00+00:00",
}
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: managed policy size,
# 6,144 characters (whitespace excluded), not adjustable.
MANAGED_POLICY_CHARACTERS = 6144
PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "ml_cache"

# The calls the DAGs make (build and rollout), with the context a correct call carries.
DAG_CALLS = [
    Request("ssm:GetParameter", AMI_PARAMETER),
    Request("ssm:GetParameter", PARAMETER),
    Request("ssm:GetParameter", METADATA_PARAMETER),
    *LAUNCH_CALLS,
    Request("ec2:DescribeInstances", "*"),
    Request("ec2:DescribeInstanceStatus", "*"),
    Request("ssm:DescribeInstanceInformation", "*"),
    Request("ssm:CreateDocument", DOCUMENT),
    Request("ssm:UpdateDocument", DOCUMENT),
    Request("ssm:UpdateDocumentDefaultVersion", DOCUMENT),
    Request("ssm:DescribeDocument", DOCUMENT),
    Request("ssm:GetDocument", DOCUMENT),
    Request("ssm:SendCommand", DOCUMENT),
    Request("ssm:SendCommand", INSTANCE, BUILDER_FOR_SSM),
    Request("ssm:GetCommandInvocation", "*"),
    Request("ssm:ListCommandInvocations", "*"),
    Request("ec2:DescribeVolumes", "*"),
    Request("ec2:CreateSnapshot", VOLUME, BUILDER_RESOURCE),
    Request("ec2:CreateSnapshot", f"arn:aws:ec2:{REGION}::snapshot/*", OUR_REQUEST_TAGS),
    Request("ec2:CreateTags", f"arn:aws:ec2:{REGION}::snapshot/*",
            {**OUR_REQUEST_TAGS, "ec2:CreateAction": "CreateSnapshot"}),
    Request("ec2:DescribeSnapshots", "*"),
    Request("ec2:DeleteSnapshot", SNAPSHOT, OUR_RESOURCE),
    Request("ec2:EnableFastSnapshotRestores", SNAPSHOT, OUR_RESOURCE),
    Request("ec2:DisableFastSnapshotRestores", SNAPSHOT, OUR_RESOURCE),
    Request("ec2:DescribeFastSnapshotRestores", "*"),
    Request("ec2:DescribeAvailabilityZones", "*"),
    # resolve_ami's preflight: the builder's instance types are offered here, of the platform's architecture
    Request("ec2:DescribeInstanceTypeOfferings", "*"),
    Request("ec2:DescribeInstanceTypes", "*"),
    Request("ssm:PutParameter", PARAMETER),
    Request("ssm:PutParameter", METADATA_PARAMETER),
    Request("ec2:TerminateInstances", INSTANCE, BUILDER_RESOURCE),
    # Publish marks the new snapshot and sizes it (EBS direct APIs) for the cost report.
    Request("ec2:CreateTags", SNAPSHOT, MARK_PUBLISHED),
    Request("ebs:ListSnapshotBlocks", SNAPSHOT, OUR_RESOURCE),
    Request("ebs:ListChangedBlocks", SNAPSHOT, OUR_RESOURCE),
    Request("ebs:ListChangedBlocks", PARENT_SNAPSHOT, OUR_RESOURCE),
    # Janitor: orphans, FSR retirement, retention, document versions, and what still references a snapshot
    Request("ec2:DeleteVolume", VOLUME, BUILDER_RESOURCE),
    Request("ssm:GetParameterHistory", PARAMETER),
    Request("ssm:ListDocumentVersions", DOCUMENT),
    Request("ssm:DeleteDocument", DOCUMENT),
    Request("eks:DescribeNodegroup", SYSTEM_NODE_GROUP_ARN),
    Request("eks:ListUpdates", NODE_GROUP_ARN),
    Request("eks:ListUpdates", SYSTEM_NODE_GROUP_ARN),
    Request("eks:DescribeUpdate", SYSTEM_NODE_GROUP_ARN),
    Request("eks:ListUpdates", CLUSTER_ARN),
    # Rollout
    Request("ec2:DescribeLaunchTemplates", "*"),
    Request("ec2:DescribeLaunchTemplateVersions", "*"),
    Request("ec2:CreateLaunchTemplateVersion", f"{EC2}:launch-template/{LAUNCH_TEMPLATE}"),
    Request("eks:DescribeCluster", CLUSTER_ARN),
    Request("eks:ListNodegroups", CLUSTER_ARN),
    Request("eks:DescribeNodegroup", NODE_GROUP_ARN),
    Request("eks:UpdateNodegroupVersion", NODE_GROUP_ARN),
    # a group scaled to 0 gets one validation node for the rollout, then its scaling back
    Request("eks:UpdateNodegroupConfig", NODE_GROUP_ARN),
    Request("eks:DescribeUpdate", NODE_GROUP_ARN),
    Request("eks:DescribeUpdate", CLUSTER_ARN),
]

CONTRACT_ACTIONS = {
    "ssm:GetParameter", "ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus", "ec2:TerminateInstances", "iam:PassRole", "ssm:DescribeInstanceInformation",
    "ssm:SendCommand", "ssm:GetCommandInvocation", "ssm:ListCommandInvocations",
    "ssm:CreateDocument", "ssm:UpdateDocument", "ssm:UpdateDocumentDefaultVersion", "ssm:DescribeDocument",
    "ssm:GetDocument", "ec2:DescribeVolumes", "ec2:CreateSnapshot", "ec2:DescribeSnapshots",
    "ec2:DeleteSnapshot", "ec2:EnableFastSnapshotRestores", "ec2:DisableFastSnapshotRestores",
    "ec2:DescribeFastSnapshotRestores", "ec2:DescribeAvailabilityZones", "ssm:PutParameter",
    "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions", "ec2:CreateLaunchTemplateVersion",
    "eks:DescribeCluster", "eks:DescribeNodegroup", "eks:UpdateNodegroupVersion", "eks:DescribeUpdate",
    "eks:UpdateNodegroupConfig",
    "eks:ListNodegroups", "eks:ListUpdates", "ec2:DeleteVolume", "ebs:ListSnapshotBlocks", "ebs:ListChangedBlocks",
    "ssm:GetParameterHistory", "ssm:ListDocumentVersions", "ssm:DeleteDocument",
}


def _without(context: dict[str, str], key: str) -> dict[str, str]:
    return {name: value for name, value in context.items() if name != key}


# Calls outside the scope: wrong tag, missing tag, other resources, IMDSv1, other role...
REFUSED_CALLS = {
    "run without the pipeline tag": Request(
        "ec2:RunInstances", f"{EC2}:instance/*", _without(BUILDER_INSTANCE, "aws:RequestTag/ml-cache:pipeline")),
    "run with another pipeline's tag": Request(
        "ec2:RunInstances", f"{EC2}:instance/*",
        {**BUILDER_INSTANCE, "aws:RequestTag/ml-cache:pipeline": "someone-else"}),
    "run without the run-id tag": Request(
        "ec2:RunInstances", f"{EC2}:instance/*", _without(BUILDER_INSTANCE, "aws:RequestTag/ml-cache:run-id")),
    "run with IMDSv1 allowed": Request(
        "ec2:RunInstances", f"{EC2}:instance/*", {**BUILDER_INSTANCE, "ec2:MetadataHttpTokens": "optional"}),
    "run with another instance profile": Request(
        "ec2:RunInstances", f"{EC2}:instance/*",
        {**BUILDER_INSTANCE, "ec2:InstanceProfile": f"arn:aws:iam::{ACCOUNT}:instance-profile/admin"}),
    "run without the role tag": Request(
        "ec2:RunInstances", f"{EC2}:instance/*", _without(BUILDER_INSTANCE, "aws:RequestTag/ml-cache:role")),
    "run with another role tag": Request(
        "ec2:RunInstances", f"{EC2}:instance/*", {**BUILDER_INSTANCE, "aws:RequestTag/ml-cache:role": "node"}),
    "run a volume without the role tag": Request(
        "ec2:RunInstances", f"{EC2}:volume/*", _without(LAUNCH_CALLS[1].context, "aws:RequestTag/ml-cache:role")),
    "run another instance type": Request(
        "ec2:RunInstances", f"{EC2}:instance/*", {**BUILDER_INSTANCE, "ec2:InstanceType": "p5.48xlarge"}),
    "run in another subnet of our VPC": Request("ec2:RunInstances", f"{EC2}:subnet/subnet-0public", IN_OUR_VPC),
    "run with another security group of our VPC": Request(
        "ec2:RunInstances", f"{EC2}:security-group/sg-0wideopen", IN_OUR_VPC),
    "run with a public IP": Request(
        "ec2:RunInstances", f"{EC2}:network-interface/*", {**IN_OUR_VPC, "ec2:AssociatePublicIpAddress": "true"}),
    "run an AMI of another owner": Request(
        "ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-0evil", {"ec2:Owner": "999988887777"}),
    "run an AMI of the amazon alias": Request(
        "ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-0evil", {"ec2:Owner": "amazon"}),
    "run from another account's snapshot": Request(
        "ec2:RunInstances", f"arn:aws:ec2:{REGION}::snapshot/snap-0evil", {"ec2:Owner": "999988887777"}),
    "run an untagged volume": Request("ec2:RunInstances", f"{EC2}:volume/*", {}),
    "run in another VPC": Request(
        "ec2:RunInstances", f"{EC2}:subnet/subnet-0def", {"ec2:Vpc": f"{EC2}:vpc/vpc-other"}),
    "pass another role": Request(
        "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "ec2.amazonaws.com"}),
    "pass the builder role to another service": Request(
        "iam:PassRole", BUILDER_ROLE, {"iam:PassedToService": "lambda.amazonaws.com"}),
    "terminate an untagged instance": Request("ec2:TerminateInstances", INSTANCE, {}),
    "terminate a node (pipeline tag, no role)": Request("ec2:TerminateInstances", INSTANCE, NODE_RESOURCE),
    "send a command to a node": Request(
        "ssm:SendCommand", INSTANCE, {"ssm:resourceTag/ml-cache:pipeline": PIPELINE}),
    "snapshot a node's volume": Request("ec2:CreateSnapshot", VOLUME, NODE_RESOURCE),
    "delete a node's volume": Request("ec2:DeleteVolume", VOLUME, NODE_RESOURCE),
    "tag a node as a builder": Request("ec2:CreateTags", INSTANCE, {
        **NODE_RESOURCE, "aws:RequestTag/ml-cache:role": "builder", "aws:TagKeys": ["ml-cache:role"]}),
    "terminate a builder of another pipeline": Request("ec2:TerminateInstances", INSTANCE, {
        "aws:ResourceTag/ml-cache:pipeline": "other", "aws:ResourceTag/ml-cache:role": "builder"}),
    "terminate another pipeline's instance": Request(
        "ec2:TerminateInstances", INSTANCE, {"aws:ResourceTag/ml-cache:pipeline": "other"}),
    "tag an existing instance": Request("ec2:CreateTags", INSTANCE, OUR_REQUEST_TAGS),
    "send a command to an untagged instance": Request("ssm:SendCommand", INSTANCE, {}),
    "send another document": Request("ssm:SendCommand", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"),
    "snapshot an untagged volume": Request("ec2:CreateSnapshot", VOLUME, {}),
    "create an untagged snapshot": Request("ec2:CreateSnapshot", f"arn:aws:ec2:{REGION}::snapshot/*", {}),
    "delete an untagged snapshot": Request("ec2:DeleteSnapshot", SNAPSHOT, {}),
    "enable FSR on an untagged snapshot": Request("ec2:EnableFastSnapshotRestores", SNAPSHOT, {}),
    "disable FSR on another pipeline's snapshot": Request(
        "ec2:DisableFastSnapshotRestores", SNAPSHOT, {"aws:ResourceTag/ml-cache:pipeline": "other"}),
    "write another parameter": Request("ssm:PutParameter", f"{SSM}:parameter/other/snapshot-id"),
    "read another parameter": Request("ssm:GetParameter", f"{SSM}:parameter/prod/db-password"),
    "register another document": Request("ssm:CreateDocument", f"{SSM}:document/other"),
    "version another launch template": Request(
        "ec2:CreateLaunchTemplateVersion", f"{EC2}:launch-template/lt-0other"),
    "update another node group": Request(
        "eks:UpdateNodegroupVersion", f"{EKS}:nodegroup/{CLUSTER}/other-gpu/6ec5a4f2"),
    "update a node group of another cluster": Request(
        "eks:UpdateNodegroupVersion", f"{EKS}:nodegroup/other/{NODE_GROUP}/6ec5a4f2"),
    "describe another cluster": Request("eks:DescribeCluster", f"{EKS}:cluster/other"),
    "stop an instance": Request("ec2:StopInstances", INSTANCE, BUILDER_RESOURCE),
    "cancel any command (no resource scope exists)": Request("ssm:CancelCommand", "*"),
    "delete a parameter": Request("ssm:DeleteParameter", PARAMETER),
    "delete the node group": Request("eks:DeleteNodegroup", NODE_GROUP_ARN),
    "mark another pipeline's snapshot published": Request(
        "ec2:CreateTags", SNAPSHOT, {**MARK_PUBLISHED, "aws:ResourceTag/ml-cache:pipeline": "other"}),
    "mark an untagged snapshot published": Request(
        "ec2:CreateTags", SNAPSHOT, _without(MARK_PUBLISHED, "aws:ResourceTag/ml-cache:pipeline")),
    "retag our snapshot's pipeline": Request(
        "ec2:CreateTags", SNAPSHOT, {**OUR_RESOURCE, "aws:TagKeys": ["ml-cache:pipeline"]}),
    "add another key along with published": Request(
        "ec2:CreateTags", SNAPSHOT, {**MARK_PUBLISHED, "aws:TagKeys": [PUBLISHED_TAG, "Name"]}),
    "tag our snapshot without tag keys": Request("ec2:CreateTags", SNAPSHOT, OUR_RESOURCE),
    "mark an existing instance published": Request(
        "ec2:CreateTags", INSTANCE, {**MARK_PUBLISHED}),
    "mark an existing volume published": Request("ec2:CreateTags", VOLUME, {**MARK_PUBLISHED}),
    "count blocks of another pipeline's snapshot": Request(
        "ebs:ListSnapshotBlocks", SNAPSHOT, {"aws:ResourceTag/ml-cache:pipeline": "other"}),
    "diff an untagged snapshot": Request("ebs:ListChangedBlocks", PARENT_SNAPSHOT, {}),
    "read a snapshot's data": Request("ebs:GetSnapshotBlock", SNAPSHOT, OUR_RESOURCE),
    "write a snapshot": Request("ebs:StartSnapshot", SNAPSHOT, OUR_RESOURCE),
    "delete an untagged volume": Request("ec2:DeleteVolume", VOLUME, {}),
    "delete another pipeline's volume": Request(
        "ec2:DeleteVolume", VOLUME,
        {"aws:ResourceTag/ml-cache:pipeline": "other", "aws:ResourceTag/ml-cache:role": "builder"}),
    "delete another document": Request("ssm:DeleteDocument", f"{SSM}:document/other"),
    "delete an AWS document": Request("ssm:DeleteDocument", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"),
    "list versions of another document": Request("ssm:ListDocumentVersions", f"{SSM}:document/other"),
    "read another parameter's history": Request("ssm:GetParameterHistory", f"{SSM}:parameter/prod/db-password"),
    "describe a node group of another cluster": Request(
        "eks:DescribeNodegroup", f"{EKS}:nodegroup/other/{NODE_GROUP}/6ec5a4f2"),
    "list updates of another cluster": Request("eks:ListUpdates", f"{EKS}:cluster/other"),
    "list updates of a node group of another cluster": Request(
        "eks:ListUpdates", f"{EKS}:nodegroup/other/{NODE_GROUP}/6ec5a4f2"),
    "update the system node group": Request("eks:UpdateNodegroupVersion", SYSTEM_NODE_GROUP_ARN),
    "scale the system node group": Request("eks:UpdateNodegroupConfig", SYSTEM_NODE_GROUP_ARN),
    "update the baseline node group's version": Request("eks:UpdateNodegroupVersion", BASELINE_NODE_GROUP_ARN),
    "scale another node group": Request("eks:UpdateNodegroupConfig", f"{EKS}:nodegroup/{CLUSTER}/other-gpu/6ec5a4f2"),
    "delete a volume of another account": Request(
        "ec2:DeleteVolume", f"arn:aws:ec2:{REGION}:444455556666:volume/vol-0abc", BUILDER_RESOURCE),
}


def render_policy(tmp_path: Path, kms_key_arn: str | None = None, **inputs: Any) -> list[dict[str, Any]]:
    """Apply a configuration that only calls the module, and read its two documents (DAG calls, launch)."""
    tree = copy_tree(tmp_path)
    root = tmp_path / "render"
    root.mkdir()
    module = {"source": str(tree / "modules" / "airflow-policy"), **POLICY_INPUTS, "kms_key_arn": kms_key_arn,
              **inputs}
    (root / "main.tf.json").write_text(json.dumps({
        "module": {"policy": module},
        "output": {name: {"value": f"${{module.policy.{name}}}"} for name in ("json", "launch_json")},
    }))
    terraform = Terraform(root)
    terraform.init()
    terraform.apply()
    outputs = terraform.outputs()
    return [json.loads(str(outputs["json"])), json.loads(str(outputs["launch_json"]))]


def union_actions(policies: list[dict[str, Any]]) -> set[str]:
    return set().union(*(allowed_actions(document) for document in policies))


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_policy(tmp_path_factory.mktemp("policy"))


@pytest.mark.parametrize("request_", DAG_CALLS, ids=lambda r: f"{r.action} {r.resource.rsplit(':', 1)[-1]}")
def test_each_dag_call_is_allowed(policy: list[dict[str, Any]], request_: Request) -> None:
    assert is_allowed(policy, request_)


@pytest.mark.parametrize("name", sorted(REFUSED_CALLS))
def test_calls_out_of_scope_are_refused(policy: list[dict[str, Any]], name: str) -> None:
    assert not is_allowed(policy, REFUSED_CALLS[name])


def test_allows_exactly_the_contract_actions(policy: list[dict[str, Any]]) -> None:
    assert union_actions(policy) == CONTRACT_ACTIONS
    assert not any("*" in action for action in union_actions(policy))


def test_every_dag_call_is_in_the_contract() -> None:
    assert {call.action for call in DAG_CALLS} == CONTRACT_ACTIONS


def _client_operations() -> set[str]:
    """Every boto3 operation the Airflow side names on a client: `.conn.<op>`, paginators, custom waiters."""
    names: set[str] = set()
    for source in PLUGINS.rglob("*.py"):
        if "scripts" in source.parts:  # runs on the builder, under the builder role
            continue
        text = source.read_text()
        names |= set(re.findall(r"\.conn\.([a-z_]+)", text)) | set(re.findall(r'get_paginator\("([a-z_]+)"\)', text))
    names -= {"exceptions", "get_paginator", "meta"}
    operations = {"".join(word.capitalize() for word in name.split("_")) for name in names}
    for waiters in (PLUGINS / "waiters").glob("*.json"):
        operations |= {w["operation"] for w in json.loads(waiters.read_text())["waiters"].values()}
    return operations


def test_every_client_operation_of_the_plugins_is_allowed(policy: list[dict[str, Any]]) -> None:
    operations = _client_operations()
    assert {"DeleteVolume", "ListChangedBlocks", "GetParameterHistory", "DeleteDocument"} <= operations
    allowed = {action.split(":", 1)[1] for action in union_actions(policy)}
    assert operations - allowed == set(), "operations the plugins call that the Airflow policy does not allow"


def _iam_size(policy: list[dict[str, Any]]) -> int:
    """Characters IAM counts against the managed policy limit (whitespace outside strings excluded)."""
    return len(json.dumps(policy, separators=(",", ":")))


def test_is_valid_iam_json_under_the_size_limit(policy: list[dict[str, Any]]) -> None:
    sids = [statement["Sid"] for document in policy for statement in document["Statement"]]
    assert len(sids) == len(set(sids)), "Sids must be unique"
    for document in policy:
        assert document["Version"] == "2012-10-17"
        assert _iam_size(document) <= MANAGED_POLICY_CHARACTERS


def test_customer_managed_key_adds_kms_through_ec2_only(tmp_path: Path) -> None:
    policy = render_policy(tmp_path, kms_key_arn=KMS_KEY)
    via_ec2 = {"kms:ViaService": f"ec2.{REGION}.amazonaws.com"}
    assert is_allowed(policy, Request("kms:CreateGrant", KMS_KEY, via_ec2))
    assert is_allowed(policy, Request("kms:GenerateDataKeyWithoutPlaintext", KMS_KEY, via_ec2))
    assert not is_allowed(policy, Request("kms:Decrypt", KMS_KEY, {}))
    assert not is_allowed(policy, Request("kms:CreateGrant", f"{KMS_KEY}-other", via_ec2))
    assert all(_iam_size(document) <= MANAGED_POLICY_CHARACTERS for document in policy)


def test_notification_topics_add_sns_publish_to_them_only(tmp_path: Path) -> None:
    """ml_cache.notify publishes with the DAGs' connection: to the configured topics, nothing else of SNS."""
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:ml-cache-notifications"
    policy = render_policy(tmp_path, notification_topic_arns=[topic])
    assert is_allowed(policy, Request("sns:Publish", topic, {}))
    assert not is_allowed(policy, Request("sns:Publish", f"{topic}-other", {}))
    assert union_actions(policy) - CONTRACT_ACTIONS == {"sns:Publish"}
    assert all(_iam_size(document) <= MANAGED_POLICY_CHARACTERS for document in policy)


def test_the_build_log_group_adds_reading_its_streams_only(tmp_path: Path) -> None:
    """ml_cache.triggers.builder_command reads the builder's output stream of this group, nothing else of Logs."""
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/{PIPELINE}/build"
    policy = render_policy(tmp_path, build_log_group_arn=group)
    stream = f"{group}:log-stream:0123abcd-0000-1111-2222-333344445555/i-0123456789abcdef0/buildCache/stderr"
    assert is_allowed(policy, Request("logs:GetLogEvents", stream, {}))
    assert is_allowed(policy, Request("logs:FilterLogEvents", group, {}))
    assert not is_allowed(policy, Request("logs:GetLogEvents", f"{group}-other:log-stream:x", {}))
    assert not is_allowed(policy, Request("logs:PutLogEvents", stream, {}))
    assert union_actions(policy) - CONTRACT_ACTIONS == {"logs:FilterLogEvents", "logs:GetLogEvents"}
    assert all(_iam_size(document) <= MANAGED_POLICY_CHARACTERS for document in policy)


def test_the_baseline_node_group_adds_scaling_it_only(tmp_path: Path, policy: list[dict[str, Any]]) -> None:
    """With uncached_baseline the rollout scales that group 0 -> 1 -> back (UpdateNodegroupConfig, then
    DescribeUpdate and DescribeNodegroup until done) and never updates its version; without it, no scaling."""
    scale = Request("eks:UpdateNodegroupConfig", BASELINE_NODE_GROUP_ARN)
    assert not is_allowed(policy, scale)
    with_baseline = render_policy(tmp_path, baseline_node_group_name=BASELINE_NODE_GROUP)
    for action in ("eks:UpdateNodegroupConfig", "eks:DescribeUpdate", "eks:DescribeNodegroup"):
        assert is_allowed(with_baseline, Request(action, BASELINE_NODE_GROUP_ARN)), action
    assert not is_allowed(with_baseline, Request("eks:UpdateNodegroupVersion", BASELINE_NODE_GROUP_ARN))
    assert not is_allowed(with_baseline, Request(
        "eks:UpdateNodegroupConfig", f"{EKS}:nodegroup/other/{BASELINE_NODE_GROUP}/8ae7c6b4"))
    assert union_actions(with_baseline) == CONTRACT_ACTIONS
    assert all(_iam_size(document) <= MANAGED_POLICY_CHARACTERS for document in with_baseline)


@pytest.mark.parametrize("candidate", range(len(LAUNCH.candidates())))
def test_every_launch_candidate_is_allowed(policy: list[dict[str, Any]], candidate: int) -> None:
    """Each (instance type, subnet) fallback LaunchBuilderOperator may send, as builder_request builds it."""
    refused = [call for call in run_instances_calls(builder_requests()[candidate], WHERE)
               if not is_allowed(policy, call)]
    assert refused == []


def test_the_dag_calls_would_not_fit_in_one_policy(tmp_path: Path) -> None:
    """Why launching a builder is a policy of its own: with a customer managed key, one would not fit."""
    policy = render_policy(tmp_path, kms_key_arn=KMS_KEY)
    merged = {"Version": "2012-10-17", "Statement": [s for document in policy for s in document["Statement"]]}
    assert _iam_size(merged) > MANAGED_POLICY_CHARACTERS
