"""Apply terraform/examples/local-cloud into the local cloud, check what exists, destroy it.

Runs the module exactly as users run it, only with every endpoint pointed at the local cloud
(a moto server, devstack's when it is importable). The wall times of apply and destroy are
printed (pytest -s) and written to $ML_CACHE_TF_TIMINGS when that is set.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from ec2_authorization import Account, mutating_actions, node_calls, run_instances_calls
from tf_iam_eval import Request, allowed_actions, is_allowed
from tf_runner import PLUGIN_DIR, REPO, Terraform, copy_tree, skip_reason, terraform_binary

from ml_cache.builder_instance import builder_request
from ml_cache.builder_spec import validate_registry_credentials, validate_registry_endpoints
from ml_cache.operators.builder import builder_tags

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.slow,
]

REGION = "us-west-2"
PIPELINE = "ml-container-cache"
GPU_LAUNCH_TEMPLATE = "module.ml_container_cache.aws_launch_template.gpu"  # both templates: a -target
GPU_TEMPLATE = f'{GPU_LAUNCH_TEMPLATE}["gpu"]'
GPU_NODE_GROUP = "module.ml_container_cache.aws_eks_node_group.gpu"
BASELINE_NODE_GROUP = f"{PIPELINE}-gpu-baseline"
EKS_AMI_OWNER = "602401143452"  # terraform/variables.tf builder_ami_owner_ids default

# Private registries as a site configures them (README.md): auto-loaded by every apply, plan and destroy.
REGISTRY_SECRET = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:ngc-AbCdEf"
REGISTRY_REPOSITORY = "arn:aws:ecr:us-east-1:444455556666:repository/team/vllm"
REGISTRY_VARIABLES = {
    "registry_credentials": {
        "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
        "nvcr.io": {"source": "secretsmanager", "secret_arn": REGISTRY_SECRET},
        "ghcr.io": {"source": "ssm_secure_parameter", "parameter_name": f"/{PIPELINE}/registry/ghcr"},
    },
    "ecr_repository_arns": [REGISTRY_REPOSITORY],
    "registry_endpoints": {"docker.io": "https://dockerhub-mirror.example.com"},
}
# The uncached baseline on (its group rests at 0 nodes): every test below sees it as a site would.
SITE_VARIABLES = {"uncached_baseline": True}


@dataclass
class Deployment:
    terraform: Terraform
    endpoint: str
    outputs: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    destroyed: bool = False
    config_file: Path | None = None

    def client(self, service: str) -> Any:
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def apply(self, *args: str) -> float:
        return self.terraform.apply(f"-var=endpoint_url={self.endpoint}", *args)

    def destroy(self) -> float:
        seconds = self.terraform.destroy(f"-var=endpoint_url={self.endpoint}")
        self.destroyed = True
        return seconds


def _report(timings: dict[str, float]) -> None:
    line = json.dumps({name: round(seconds, 1) for name, seconds in timings.items()})
    print(f"\nterraform local-cloud timings (s): {line}")
    target = os.environ.get("ML_CACHE_TF_TIMINGS")
    if target:
        Path(target).write_text(line + "\n")


@pytest.fixture(scope="module")
def deployment(local_cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tree = copy_tree(tmp_path_factory.mktemp("apply"))
    terraform = Terraform(tree / "examples" / "local-cloud")
    (terraform.workdir / "registries.auto.tfvars.json").write_text(json.dumps(REGISTRY_VARIABLES))
    (terraform.workdir / "site.auto.tfvars.json").write_text(json.dumps(SITE_VARIABLES))
    deployment = Deployment(terraform=terraform, endpoint=local_cloud.endpoint, outputs={})
    print(f"\nlocal cloud: {local_cloud.kind} at {local_cloud.endpoint}")
    # The first apply goes through apply.sh, the entry point `make run` uses.
    config_file = tree.parent / "out" / "ml_cache.yaml"
    started = time.monotonic()
    subprocess.run(
        ["bash", str(terraform.workdir / "apply.sh"), local_cloud.endpoint, str(config_file)],
        env={**terraform.env(), "TF_PLUGIN_DIR": str(PLUGIN_DIR)}, check=True, capture_output=True, timeout=900,
    )
    deployment.timings["apply"] = time.monotonic() - started
    deployment.outputs = terraform.outputs()
    deployment.config_file = config_file
    try:
        yield deployment
    finally:
        if not deployment.destroyed:
            deployment.destroy()
        _report(deployment.timings)


def _default_version(ec2: Any, template_id: str) -> dict[str, Any]:
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["$Default"])
    return versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]


def _cache_mapping(template_data: dict[str, Any]) -> dict[str, Any]:
    mappings = {m["DeviceName"]: m for m in template_data["BlockDeviceMappings"]}
    return mappings["/dev/xvdb"]["Ebs"]


def test_subnets_span_three_availability_zones(deployment: Deployment) -> None:
    ec2 = deployment.client("ec2")
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [deployment.outputs["vpc_id"]]}])["Subnets"]
    tags = [{t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in subnets]
    private = [s for s, t in zip(subnets, tags, strict=True) if t.get("kubernetes.io/role/internal-elb") == "1"]
    public = [s for s, t in zip(subnets, tags, strict=True) if t.get("kubernetes.io/role/elb") == "1"]
    assert len({s["AvailabilityZone"] for s in private}) == 3
    assert len({s["AvailabilityZone"] for s in public}) == 3
    assert sorted(s["SubnetId"] for s in private) == sorted(deployment.outputs["private_subnet_ids"])
    nat = ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [deployment.outputs["vpc_id"]]}])
    assert len([g for g in nat["NatGateways"] if g["State"] == "available"]) == 1


def test_cluster_exists(deployment: Deployment) -> None:
    cluster = deployment.client("eks").describe_cluster(name=deployment.outputs["cluster_name"])["cluster"]
    assert cluster["status"] == "ACTIVE"
    assert cluster["version"] == "1.33"
    assert sorted(cluster["resourcesVpcConfig"]["subnetIds"]) == sorted(deployment.outputs["private_subnet_ids"])


def test_gpu_node_group_uses_our_launch_template(deployment: Deployment) -> None:
    eks = deployment.client("eks")
    group = eks.describe_nodegroup(
        clusterName=deployment.outputs["cluster_name"], nodegroupName=deployment.outputs["gpu_node_group_name"],
    )["nodegroup"]
    assert group["launchTemplate"]["id"] == deployment.outputs["gpu_launch_template_id"]
    assert group["amiType"] == "AL2023_x86_64_NVIDIA"
    assert group["instanceTypes"] == ["g6e.xlarge"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"} in group["taints"]
    assert group["labels"]["ml-cache/enabled"] == "true"
    names = eks.list_nodegroups(clusterName=deployment.outputs["cluster_name"])["nodegroups"]
    assert sorted(names) == sorted([f"{PIPELINE}-gpu", f"{PIPELINE}-system", BASELINE_NODE_GROUP])


def _baseline_group(deployment: Deployment) -> dict[str, Any]:
    return deployment.client("eks").describe_nodegroup(
        clusterName=deployment.outputs["cluster_name"], nodegroupName=BASELINE_NODE_GROUP)["nodegroup"]


def test_the_baseline_group_rests_at_zero_nodes_on_a_blank_cache_volume(deployment: Deployment) -> None:
    """uncached_baseline: the GPU node without the cache, at 0 nodes until a rollout scales it to 1."""
    assert deployment.outputs["gpu_baseline_node_group_name"] == BASELINE_NODE_GROUP
    eks, ec2 = deployment.client("eks"), deployment.client("ec2")
    group = _baseline_group(deployment)
    gpu = eks.describe_nodegroup(clusterName=deployment.outputs["cluster_name"],
                                 nodegroupName=deployment.outputs["gpu_node_group_name"])["nodegroup"]
    assert group["scalingConfig"] == {"minSize": 0, "maxSize": 1, "desiredSize": 0}
    assert group["labels"] == {**gpu["labels"], "ml-cache/enabled": "false"}
    for key in ("amiType", "instanceTypes", "capacityType", "taints", "nodeRole", "subnets"):
        assert group[key] == gpu[key], key
    assert sorted(group["subnets"]) == sorted(deployment.outputs["private_subnet_ids"])
    assert group["launchTemplate"]["id"] != deployment.outputs["gpu_launch_template_id"]
    data = _default_version(ec2, group["launchTemplate"]["id"])
    assert "SnapshotId" not in _cache_mapping(data)
    gpu_data = _default_version(ec2, deployment.outputs["gpu_launch_template_id"])
    assert data["UserData"] == gpu_data["UserData"]
    assert _cache_mapping(data) == _cache_mapping(gpu_data)  # no snapshot published yet: both blank
    names = {spec["ResourceType"]: {t["Key"]: t["Value"] for t in spec["Tags"]}.get("Name")
             for spec in data["TagSpecifications"]}
    assert names["instance"] == names["volume"] == BASELINE_NODE_GROUP


def test_airflow_may_scale_the_baseline_group_only(deployment: Deployment) -> None:
    """What the rollout calls on it (scale 0 -> 1 -> back, wait on the update), by the policies IAM holds."""
    policies, arn = _airflow_policies(deployment), _baseline_group(deployment)["nodegroupArn"]
    for action in ("eks:UpdateNodegroupConfig", "eks:DescribeUpdate", "eks:DescribeNodegroup"):
        assert is_allowed(policies, Request(action, arn)), action
    assert not is_allowed(policies, Request("eks:UpdateNodegroupVersion", arn))
    assert not is_allowed(policies, Request("eks:DeleteNodegroup", arn))


def test_first_apply_has_a_blank_cache_volume_and_the_mount_script(deployment: Deployment) -> None:
    ec2 = deployment.client("ec2")
    data = _default_version(ec2, deployment.outputs["gpu_launch_template_id"])
    cache = _cache_mapping(data)
    assert "SnapshotId" not in cache
    assert cache["VolumeType"] == "gp3"
    assert deployment.outputs.get("cache_snapshot_id") is None  # null outputs are omitted
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    user_data = base64.b64decode(data["UserData"]).decode()
    assert user_data.startswith("MIME-Version: 1.0")
    assert (REPO / "terraform/templates/mount-containerd-cache.sh").read_text() in user_data.replace("\r\n", "\n")


def test_parameters_hold_placeholders(deployment: Deployment) -> None:
    ssm = deployment.client("ssm")
    assert ssm.get_parameter(Name=f"/{PIPELINE}/snapshot-id")["Parameter"]["Value"] == "none"
    assert ssm.get_parameter(Name=f"/{PIPELINE}/snapshot-metadata")["Parameter"]["Value"] == "{}"


def test_builder_profile_role_and_security_group(deployment: Deployment) -> None:
    iam = deployment.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName=deployment.outputs["builder_instance_profile_name"])
    role = profile["InstanceProfile"]["Roles"][0]["RoleName"]
    attached = {p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]}
    # No AmazonSSMManagedInstanceCore (every parameter), no AmazonEC2ContainerRegistryReadOnly (every repository).
    assert attached == set()
    assert sorted(iam.list_role_policies(RoleName=role)["PolicyNames"]) == ["command-output", "registry-read",
                                                                          "ssm-agent"]
    document = iam.get_role_policy(RoleName=role, PolicyName="registry-read")["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    assert document == json.loads(deployment.outputs["builder_registry_policy_json"])
    resources = {sid["Sid"]: sid.get("Resource", sid.get("NotResource")) for sid in document["Statement"]}
    assert resources["RegistryEcrPullConfiguredRepositories"] == [REGISTRY_REPOSITORY]
    assert resources["RegistryReadConfiguredSecrets"] == [REGISTRY_SECRET]
    account = deployment.client("sts").get_caller_identity()["Account"]
    ghcr_parameter = f"arn:aws:ssm:{REGION}:{account}:parameter/{PIPELINE}/registry/ghcr"
    assert resources["RegistryDenyOtherParameters"] == [ghcr_parameter]
    group = deployment.client("ec2").describe_security_groups(
        GroupIds=[deployment.outputs["builder_security_group_id"]])["SecurityGroups"][0]
    assert group["IpPermissions"] == []


def test_the_builder_writes_its_command_output_to_the_build_log_group_only(deployment: Deployment) -> None:
    """The SSM agent streams the builder's output (CreateLogGroup answered "exists", then its streams);
    Airflow reads it back; the group keeps it for the configured days."""
    group = deployment.outputs["build_log_group_name"]
    logs = deployment.client("logs")
    (described,) = [g for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
                    if g["logGroupName"] == group]
    assert described["retentionInDays"] == 30
    assert yaml.safe_load(deployment.outputs["ml_cache_config"])["aws"]["build_log_group"] == group
    iam = deployment.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName=deployment.outputs["builder_instance_profile_name"])
    role = profile["InstanceProfile"]["Roles"][0]["RoleName"]
    document = iam.get_role_policy(RoleName=role, PolicyName="command-output")["PolicyDocument"]
    documents = [json.loads(document) if isinstance(document, str) else document]
    arn = described["arn"].removesuffix(":*")
    stream = f"{arn}:log-stream:0123abcd-0000-1111-2222-333344445555/i-0123456789abcdef0/buildCache/stderr"
    for action in ("logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"):
        assert is_allowed(documents, Request(action, stream))
        assert not is_allowed(documents, Request(action, stream.replace("/build:", "/other:")))
    assert is_allowed(documents, Request("logs:CreateLogGroup", arn))
    assert not is_allowed(documents, Request("logs:GetLogEvents", stream))
    airflow = json.loads(deployment.outputs["airflow_launch_policy_json"])
    assert is_allowed([airflow], Request("logs:GetLogEvents", stream))


def test_the_deployed_builder_role_reads_no_parameter_or_secret_outside_its_own(deployment: Deployment) -> None:
    """The builder unpacks untrusted images as root: its role, as deployed (every inline policy, nothing
    attached), reads the configured registry parameter and secret and no other one, SecureStrings included."""
    iam = deployment.client("iam")
    profile = iam.get_instance_profile(InstanceProfileName=deployment.outputs["builder_instance_profile_name"])
    role = profile["InstanceProfile"]["Roles"][0]["RoleName"]
    documents = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        documents.append(json.loads(document) if isinstance(document, str) else document)
    account = deployment.client("sts").get_caller_identity()["Account"]
    parameters = f"arn:aws:ssm:{REGION}:{account}:parameter"
    assert is_allowed(documents, Request("ssm:GetParameter", f"{parameters}/{PIPELINE}/registry/ghcr"))
    assert is_allowed(documents, Request("secretsmanager:GetSecretValue", REGISTRY_SECRET))
    for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"):
        for outside in (f"{parameters}/{PIPELINE}/snapshot-id", f"{parameters}/prod/db-password",
                        f"{parameters}/{PIPELINE}/registry/other"):
            assert not is_allowed(documents, Request(action, outside)), (action, outside)
    other_secret = f"arn:aws:secretsmanager:{REGION}:{account}:secret:prod/db-password-AbCdEf"
    assert not is_allowed(documents, Request("secretsmanager:GetSecretValue", other_secret))


def _policy_document(iam: Any, arn: str) -> dict[str, Any]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return json.loads(document) if isinstance(document, str) else document


def test_airflow_policies_are_the_rendered_documents(deployment: Deployment) -> None:
    """Three managed policies with registries configured (one would exceed IAM's size quota), all listed."""
    iam = deployment.client("iam")
    main_arn, launch_arn, registry_arn = deployment.outputs["airflow_policy_arns"]
    assert main_arn == deployment.outputs["airflow_policy_arn"]
    main = _policy_document(iam, main_arn)
    assert main == json.loads(deployment.outputs["airflow_policy_json"])
    assert not any(statement["Sid"].startswith("Registry") for statement in main["Statement"])
    assert _policy_document(iam, launch_arn) == json.loads(deployment.outputs["airflow_launch_policy_json"])
    registry = _policy_document(iam, registry_arn)
    assert registry == json.loads(deployment.outputs["airflow_registry_policy_json"])
    assert [statement["Sid"] for statement in registry["Statement"]] == [
        "RegistryEcrAuthorizationToken", "RegistryEcrPullConfiguredRepositories",
        "RegistryReadConfiguredSecrets", "RegistryReadConfiguredParameters"]


def _airflow_policies(deployment: Deployment) -> list[dict[str, Any]]:
    """Airflow's policies as IAM holds them (every ARN of airflow_policy_arns)."""
    iam = deployment.client("iam")
    return [_policy_document(iam, arn) for arn in deployment.outputs["airflow_policy_arns"]]


def _where(deployment: Deployment) -> Account:
    iam = deployment.client("iam")
    account = deployment.client("sts").get_caller_identity()["Account"]
    profile = iam.get_instance_profile(InstanceProfileName=deployment.outputs["builder_instance_profile_name"])
    vpc_arn = f"arn:aws:ec2:{REGION}:{account}:vpc/{deployment.outputs['vpc_id']}"
    return Account(account=account, region=REGION, vpc_arn=vpc_arn, profile_arn=profile["InstanceProfile"]["Arn"],
                   role_arn=profile["InstanceProfile"]["Roles"][0]["Arn"], ami_owner=EKS_AMI_OWNER)


def _builder_requests(deployment: Deployment) -> list[dict[str, Any]]:
    """What LaunchBuilderOperator sends with the config Terraform wrote, for each fallback candidate."""
    settings = pytest.importorskip("ml_cache.settings")
    assert deployment.config_file is not None
    build = settings.resolve_build_settings(settings.load_config(str(deployment.config_file)), {}, region=REGION)
    launch, tags = build.builder_launch, builder_tags(PIPELINE, "scheduled__2026-11-30T00:00:00+00:00")
    return [builder_request(launch, "ami-0eks", 100, instance_type, subnet, tags, base_snapshot_id="snap-0base")
            for instance_type, subnet in launch.candidates()]


def test_the_builder_launch_the_config_asks_for_is_allowed(deployment: Deployment) -> None:
    """The producer (builder_request on Terraform's ml_cache_config) against the policies IAM holds."""
    policies, where = _airflow_policies(deployment), _where(deployment)
    requests = _builder_requests(deployment)
    assert len(requests) == 3 * 3  # three instance types in each of the three private subnets
    for request in requests:
        refused = [call for call in run_instances_calls(request, where) if not is_allowed(policies, call)]
        assert refused == []


def _node_tags(deployment: Deployment) -> list[dict[str, str]]:
    """Tags of what EKS launches for both node groups: our templates' instance and volume tag
    specifications, plus the tags EKS adds to managed node group instances."""
    ec2, eks = deployment.client("ec2"), deployment.client("eks")
    cluster = deployment.outputs["cluster_name"]
    found = []
    for name in eks.list_nodegroups(clusterName=cluster)["nodegroups"]:
        group = eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
        data = _default_version(ec2, group["launchTemplate"]["id"])
        added_by_eks = {"eks:cluster-name": cluster, "eks:nodegroup-name": name,
                        f"kubernetes.io/cluster/{cluster}": "owned"}
        for spec in data.get("TagSpecifications", []):
            found.append({**{t["Key"]: t["Value"] for t in spec["Tags"]}, **added_by_eks})
        found.append({**group.get("tags", {}), **added_by_eks})
    return found


def test_no_node_carries_the_builder_role_tag(deployment: Deployment) -> None:
    tags = _node_tags(deployment)
    assert len(tags) >= 5  # GPU: instance, volume, group; system: instance, group
    assert all(found.get("ml-cache:pipeline") == PIPELINE for found in tags)  # what the old policy trusted
    assert not any("ml-cache:role" in found for found in tags)


def test_no_mutating_airflow_action_reaches_a_node(deployment: Deployment) -> None:
    """Every action Airflow may take that changes something, on an instance and a volume tagged exactly as
    Terraform's templates tag the nodes (also when asking to add role=builder): each is refused."""
    policies, where = _airflow_policies(deployment), _where(deployment)
    launch_context = run_instances_calls(_builder_requests(deployment)[0], where)[0].context
    actions = mutating_actions(set().union(*(allowed_actions(document) for document in policies)))
    assert {"ec2:TerminateInstances", "ssm:SendCommand", "ec2:CreateSnapshot", "ec2:DeleteVolume",
            "ec2:CreateTags", "ec2:RunInstances", "ssm:UpdateDocument"} <= actions
    reached = [(action, call.resource, tags) for tags in _node_tags(deployment) for action in sorted(actions)
               for call in node_calls(action, tags, where, launch_context) if is_allowed(policies, call)]
    assert reached == []


def _role_policies(iam: Any, role: str) -> list[dict[str, Any]]:
    """Every identity policy of `role`: inline and attached (as documents)."""
    documents = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        documents.append(json.loads(document) if isinstance(document, str) else document)
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        documents.append(_policy_document(iam, attached["PolicyArn"]))
    return documents


def test_the_builder_reads_no_parameter_or_secret_but_its_registries(deployment: Deployment) -> None:
    """It unpacks untrusted images as root: its role reads the configured credentials, nothing else."""
    iam, where = deployment.client("iam"), _where(deployment)
    policies = _role_policies(iam, where.role_arn.rsplit("/", 1)[1])
    own = f"arn:aws:ssm:{REGION}:{where.account}:parameter/{PIPELINE}/registry/ghcr"
    assert is_allowed(policies, Request("ssm:GetParameter", own))
    assert is_allowed(policies, Request("secretsmanager:GetSecretValue", REGISTRY_SECRET))
    assert is_allowed(policies, Request("ssm:UpdateInstanceInformation", "*"))  # the agent registers
    assert is_allowed(policies, Request("ec2messages:GetMessages", "*"))  # and receives Run Command
    others = [f"arn:aws:ssm:{REGION}:{where.account}:parameter/{name}" for name in (
        "prod/db-password", f"{PIPELINE}/snapshot-id", f"{PIPELINE}/registry/ghcr-admin", f"{PIPELINE}/registry")]
    for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"):
        for arn in others:
            assert not is_allowed(policies, Request(action, arn)), (action, arn)
    secret = f"arn:aws:secretsmanager:{REGION}:{where.account}:secret:prod/db-AbCdEf"
    assert not is_allowed(policies, Request("secretsmanager:GetSecretValue", secret))
    for action in ("ssmmessages:OpenDataChannel", "ssm:StartSession", "ssm:SendCommand", "ec2:CreateTags"):
        assert not is_allowed(policies, Request(action, "*")), action


def test_nodes_are_no_run_command_targets(deployment: Deployment) -> None:
    """No SSM policy on the node role; the local cloud runs no vpc-cni add-on (enable_cluster_addons off),
    so aws-node keeps the CNI policy on the node role there (on AWS: Pod Identity, terraform/tests)."""
    eks, iam = deployment.client("eks"), deployment.client("iam")
    cluster = deployment.outputs["cluster_name"]
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName=deployment.outputs["gpu_node_group_name"])
    role = group["nodegroup"]["nodeRole"].rsplit("/", 1)[1]
    attached = {p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly", "AmazonEKS_CNI_Policy"}


def test_dag_config_output_is_the_config_file_completed(deployment: Deployment) -> None:
    rendered = yaml.safe_load(deployment.outputs["ml_cache_config"])
    defaults = yaml.safe_load((REPO / "plugins/ml_cache/defaults/ml_container_cache.yaml").read_text())
    assert rendered["pipeline"] == PIPELINE
    # the shipped file holds only the site's choices; Terraform completes them (the models forbid unknown keys)
    assert set(defaults["aws"]) <= set(rendered["aws"])
    assert set(defaults["build"]) <= set(rendered["build"])
    assert rendered.get("timeouts") == defaults.get("timeouts")
    assert rendered["build"]["images"] == defaults["build"]["images"]
    assert rendered["aws"]["subnet_ids"] == deployment.outputs["private_subnet_ids"]
    assert rendered["aws"]["security_group_ids"] == [deployment.outputs["builder_security_group_id"]]
    assert rendered["aws"]["instance_profile"] == deployment.outputs["builder_instance_profile_name"]
    assert rendered["aws"]["ssm_parameter"] == f"/{PIPELINE}/snapshot-id"
    assert rendered["build"]["fsr_availability_zones"] == deployment.outputs["availability_zones"]
    assert rendered["rollout"]["launch_template_id"] == deployment.outputs["gpu_launch_template_id"]
    # The credential model as the builder spec schema has it: no null keys for the unused fields.
    assert rendered["aws"]["registry_credentials"] == REGISTRY_VARIABLES["registry_credentials"]
    assert rendered["aws"]["registry_endpoints"] == REGISTRY_VARIABLES["registry_endpoints"]
    # ... and the builder spec schema, the contract's one definition, accepts them as Terraform wrote them.
    aws = rendered["aws"]
    assert validate_registry_credentials(aws["registry_credentials"]) == aws["registry_credentials"]
    assert validate_registry_endpoints(aws["registry_endpoints"]) == aws["registry_endpoints"]


def test_dag_settings_accept_the_config_file_apply_sh_wrote(deployment: Deployment) -> None:
    """The DAGs' own loader and both settings models take the file `make run` gets from apply.sh."""
    settings = pytest.importorskip("ml_cache.settings")
    assert deployment.config_file is not None
    assert deployment.config_file.read_text().strip() == str(deployment.outputs["ml_cache_config"]).strip()
    config = settings.load_config(str(deployment.config_file))
    build = settings.resolve_build_settings(config, {}, region=REGION)
    assert build.aws.instance_profile == deployment.outputs["builder_instance_profile_name"]
    rollout = settings.resolve_rollout_settings(config, {}, region=REGION)
    assert rollout.rollout.launch_template_id == deployment.outputs["gpu_launch_template_id"]
    assert rollout.rollout.uncached_baseline is True
    assert rollout.rollout.baseline_node_group_name == deployment.outputs["gpu_baseline_node_group_name"]


def test_published_snapshot_reaches_the_launch_template(deployment: Deployment) -> None:
    ec2, ssm = deployment.client("ec2"), deployment.client("ssm")
    # Larger than cache_volume_size_gib (100): the nodes' cache volume must grow to fit it.
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=200)["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ssm.put_parameter(Name=f"/{PIPELINE}/snapshot-id", Value=snapshot, Overwrite=True)
    # Targeted: moto 5.2.5 echoes neither the cluster's accessConfig nor the node group's
    # updateConfig, so a full re-apply there would replace the cluster (see terraform/README.md).
    deployment.timings["apply_snapshot"] = deployment.apply(f"-target={GPU_LAUNCH_TEMPLATE}")
    data = _default_version(ec2, deployment.outputs["gpu_launch_template_id"])
    assert _cache_mapping(data)["SnapshotId"] == snapshot
    assert _cache_mapping(data)["VolumeSize"] == 200
    # The DAG keeps owning the value: Terraform did not write the placeholder back.
    assert ssm.get_parameter(Name=f"/{PIPELINE}/snapshot-id")["Parameter"]["Value"] == snapshot
    # The baseline stays uncached.
    baseline = _default_version(ec2, _baseline_group(deployment)["launchTemplate"]["id"])
    assert "SnapshotId" not in _cache_mapping(baseline)
    ec2.delete_volume(VolumeId=volume)


def test_later_apply_leaves_the_dags_rollout_alone(deployment: Deployment) -> None:
    """The ownership rule: after a DAG rollout, Terraform follows the snapshot, never the node version."""
    ec2, ssm = deployment.client("ec2"), deployment.client("ssm")
    template_id = deployment.outputs["gpu_launch_template_id"]
    default_before = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0][
        "DefaultVersionNumber"]
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=10)["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    # What the rollout DAG does: a version from $Default with the new snapshot, default untouched.
    data = _default_version(ec2, template_id)
    _cache_mapping(data)["SnapshotId"] = snapshot
    ec2.create_launch_template_version(LaunchTemplateId=template_id, SourceVersion="$Default",
                                       LaunchTemplateData=data)
    ssm.put_parameter(Name=f"/{PIPELINE}/snapshot-id", Value=snapshot, Overwrite=True)

    plan_file = deployment.terraform.workdir / "later.tfplan"
    deployment.terraform.run("plan", f"-var=endpoint_url={deployment.endpoint}", f"-out={plan_file}")
    plan = json.loads(deployment.terraform.run("show", "-json", str(plan_file)).stdout)
    changes = {change["address"]: change["change"] for change in plan["resource_changes"]}

    node_group = changes[GPU_NODE_GROUP]
    assert node_group["actions"] in (["no-op"], ["update"])
    assert node_group["after"]["launch_template"] == node_group["before"]["launch_template"]
    template = changes[GPU_TEMPLATE]["after"]
    cache = next(m for m in template["block_device_mappings"] if m["device_name"] == "/dev/xvdb")
    assert cache["ebs"][0]["snapshot_id"] == snapshot
    described = ec2.describe_launch_templates(LaunchTemplateIds=[template_id])["LaunchTemplates"][0]
    assert described["DefaultVersionNumber"] == default_before
    ec2.delete_volume(VolumeId=volume)


def test_a_deployment_from_before_the_baseline_keeps_its_gpu_template_and_group(deployment: Deployment) -> None:
    """Its state has the GPU template at the bare address (no for_each) and no baseline: the `moved` block
    readdresses the template, nothing of the GPU group or template is replaced. Planned on a copy of the state."""
    terraform, old = deployment.terraform, deployment.terraform.workdir / "before-baseline.tfstate"
    shutil.copyfile(terraform.workdir / "terraform.tfstate", old)
    state = f"-state={old}"

    def edit_state(subcommand: str, *addresses: str) -> str:
        return subprocess.run([terraform_binary() or "terraform", "state", subcommand, state, *addresses],
                              cwd=terraform.workdir, env=terraform.env(), capture_output=True, text=True, check=True,
                              timeout=120).stdout

    edit_state("rm", "module.ml_container_cache.aws_eks_node_group.gpu_baseline",
               f'{GPU_LAUNCH_TEMPLATE}["gpu_baseline"]')
    edit_state("mv", GPU_TEMPLATE, GPU_LAUNCH_TEMPLATE)
    assert GPU_LAUNCH_TEMPLATE in edit_state("list").split()

    plan_file = terraform.workdir / "before-baseline.tfplan"
    terraform.run("plan", state, f"-var=endpoint_url={deployment.endpoint}", "-var=uncached_baseline=false",
                  f"-out={plan_file}")
    plan = json.loads(terraform.run("show", "-json", str(plan_file)).stdout)
    changes = {change["address"]: change for change in plan["resource_changes"]}
    assert changes[GPU_TEMPLATE].get("previous_address") == GPU_LAUNCH_TEMPLATE, "the moved block is missing"
    # Neither replaced (moto 5.2.5 leaves the node group's updateConfig out, hence a possible in-place update).
    assert changes[GPU_TEMPLATE]["change"]["actions"] in (["no-op"], ["update"])
    assert changes[GPU_NODE_GROUP]["change"]["actions"] in (["no-op"], ["update"])
    assert not any("baseline" in address for address in changes)


def test_destroy_removes_everything(deployment: Deployment) -> None:
    deployment.timings["destroy"] = deployment.destroy()
    started = time.monotonic()
    assert deployment.client("eks").list_clusters()["clusters"] == []
    with pytest.raises(ClientError):
        deployment.client("ec2").describe_vpcs(VpcIds=[deployment.outputs["vpc_id"]])
    with pytest.raises(ClientError):
        deployment.client("ssm").get_parameter(Name=f"/{PIPELINE}/snapshot-id")
    for arn in deployment.outputs["airflow_policy_arns"]:
        with pytest.raises(ClientError):
            deployment.client("iam").get_policy(PolicyArn=arn)
    with pytest.raises(ClientError):
        deployment.client("iam").get_instance_profile(
            InstanceProfileName=deployment.outputs["builder_instance_profile_name"])
    assert time.monotonic() - started < 30
