"""The registry read policy, as Terraform renders it: the builder role and Airflow may read the
configured secrets, parameters and ECR repositories, and nothing else.

modules/registry-read-policy is applied (no provider, no AWS) in a tiny configuration wired like
the root module (the builder gets `builder_json`, Airflow gets `json` as a managed policy next to
modules/airflow-policy's), then evaluated with tf_iam_eval. The builder is evaluated with everything
its role carries: the rendered policy plus AmazonSSMManagedInstanceCore (moto's copy of the AWS managed policy), which
allows ssm:GetParameter on every parameter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_airflow_policy import POLICY_INPUTS
from tf_iam_eval import Request, is_allowed
from tf_runner import Terraform, copy_tree, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
REGION = "us-west-2"

NGC_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ngc-AbCdEf"
DOCKER_HUB_SECRET = f"arn:aws:secretsmanager:eu-west-1:{OTHER_ACCOUNT}:secret:dockerhub-XyZ123"
GHCR_PARAMETER_NAME = "/ml-container-cache/registry/ghcr"
GHCR_PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{GHCR_PARAMETER_NAME}"
OWN_REPOSITORY = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/ml/pytorch"
FOREIGN_REPOSITORY = f"arn:aws:ecr:us-east-1:{OTHER_ACCOUNT}:repository/team/vllm"
SECRETS_KEY = f"arn:aws:kms:eu-west-1:{OTHER_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

CREDENTIALS = {
    "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
    "nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_SECRET},
    "docker.io": {"source": "secretsmanager", "secret_arn": DOCKER_HUB_SECRET},
    "ghcr.io": {"source": "ssm_secure_parameter", "parameter_name": GHCR_PARAMETER_NAME},
    "public.ecr.aws": {"source": "anonymous"},
}
REPOSITORIES = [OWN_REPOSITORY, FOREIGN_REPOSITORY]
ECR_PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
VIA_SECRETS_MANAGER_EU = {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}

# What pulling from each configured source takes.
CONFIGURED_READS = [
    Request("ecr:GetAuthorizationToken", "*"),
    *[Request(action, repository) for action in ECR_PULL for repository in REPOSITORIES],
    Request("secretsmanager:GetSecretValue", NGC_SECRET),
    Request("secretsmanager:GetSecretValue", DOCKER_HUB_SECRET),
    Request("ssm:GetParameter", GHCR_PARAMETER),
    Request("kms:Decrypt", SECRETS_KEY, VIA_SECRETS_MANAGER_EU),
    Request("kms:Decrypt", SECRETS_KEY, {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}),
]

# Neighbours of what is configured: other names, other suffixes, other accounts and regions.
UNCONFIGURED_READS = {
    "another secret of the account": Request(
        "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db-password-Q1w2E3"),
    "a secret named like the configured one": Request(
        "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ngc-admin-AbCdEf"),
    "another repository of the account": Request(
        "ecr:BatchGetImage", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/ml/internal-tools"),
    "a repository under the configured one": Request(
        "ecr:GetDownloadUrlForLayer", f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/ml/pytorch/nightly"),
    "the same repository name in another account": Request(
        "ecr:BatchGetImage", f"arn:aws:ecr:{REGION}:{OTHER_ACCOUNT}:repository/ml/pytorch"),
    "the same repository name in another region": Request(
        "ecr:BatchGetImage", f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/ml/pytorch"),
    "another parameter": Request("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/prod/db-password"),
    "a parameter named like the configured one": Request("ssm:GetParameter", f"{GHCR_PARAMETER}-admin"),
    "other parameters in a batch": Request("ssm:GetParameters", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/prod/x"),
    "a parameter path": Request("ssm:GetParametersByPath", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/prod"),
    "the key outside Secrets Manager and SSM": Request("kms:Decrypt", SECRETS_KEY, {}),
    "the key through another service": Request(
        "kms:Decrypt", SECRETS_KEY, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}),
    "another key through Secrets Manager": Request(
        "kms:Decrypt", f"arn:aws:kms:eu-west-1:{OTHER_ACCOUNT}:key/other", VIA_SECRETS_MANAGER_EU),
    "an image push": Request("ecr:PutImage", OWN_REPOSITORY),
}


def ssm_managed_instance_core() -> dict[str, Any]:
    """AmazonSSMManagedInstanceCore as moto ships it (a copy of the AWS managed policy)."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)["AmazonSSMManagedInstanceCore"]["Document"]


def render(directory: Path, credentials: dict[str, Any], repositories: list[str],
           kms_key_arns: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Apply the modules wired like the root module; return (builder policy, every Airflow policy)."""
    tree = copy_tree(directory)
    root = directory / "render"
    root.mkdir()
    config = {
        "module": {
            "registry": {
                "source": str(tree / "modules" / "registry-read-policy"),
                "partition": "aws", "region": REGION, "account_id": ACCOUNT,
                "registry_credentials": credentials, "ecr_repository_arns": repositories,
                "kms_key_arns": kms_key_arns or [],
            },
            "airflow": {
                "source": str(tree / "modules" / "airflow-policy"), **POLICY_INPUTS,
                "account_id": ACCOUNT, "parameter_names": ["/ml-container-cache/snapshot-id"],
            },
        },
        "output": {"builder": {"value": "${module.registry.builder_json}"},
                   "airflow": {"value": "${module.airflow.json}"},
                   "airflow_launch": {"value": "${module.airflow.launch_json}"},
                   "airflow_registry": {"value": "${module.registry.json}"}},
    }
    (root / "main.tf.json").write_text(json.dumps(config))
    terraform = Terraform(root)
    terraform.init()
    terraform.apply()
    outputs = terraform.outputs()
    airflow = [json.loads(str(outputs[name])) for name in ("airflow", "airflow_launch", "airflow_registry")
               if outputs.get(name)]
    return json.loads(str(outputs["builder"])), airflow


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return render(tmp_path_factory.mktemp("registry"), CREDENTIALS, REPOSITORIES, [SECRETS_KEY])


@pytest.fixture(scope="module")
def builder(policies: tuple[dict[str, Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every identity policy of the builder role: the rendered one and the SSM managed policy."""
    return [policies[0], ssm_managed_instance_core()]


@pytest.fixture(scope="module")
def airflow(policies: tuple[dict[str, Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every policy Airflow gets: the DAG calls, the builder launch and, apart for size, the registry reads."""
    assert len(policies[1]) == 3
    return policies[1]


@pytest.mark.parametrize("request_", CONFIGURED_READS, ids=lambda r: f"{r.action} {r.resource}")
def test_builder_reads_each_configured_source(builder: list[dict[str, Any]], request_: Request) -> None:
    assert is_allowed(builder, request_)


@pytest.mark.parametrize("name", UNCONFIGURED_READS)
def test_builder_reads_nothing_else(builder: list[dict[str, Any]], name: str) -> None:
    assert not is_allowed(builder, UNCONFIGURED_READS[name])


def test_the_parameter_guard_takes_back_what_the_ssm_managed_policy_grants(builder: list[dict[str, Any]]) -> None:
    other = UNCONFIGURED_READS["another parameter"]
    assert is_allowed(ssm_managed_instance_core(), other)  # alone, the managed policy reads every parameter
    assert not is_allowed(builder, other)
    assert is_allowed(builder, Request("ssm:UpdateInstanceInformation", "*"))  # the agent keeps working


@pytest.mark.parametrize("request_", CONFIGURED_READS, ids=lambda r: f"{r.action} {r.resource}")
def test_airflow_resolves_with_the_same_sources(airflow: list[dict[str, Any]], request_: Request) -> None:
    assert is_allowed(airflow, request_)


@pytest.mark.parametrize("name", UNCONFIGURED_READS)
def test_airflow_reads_nothing_else(airflow: list[dict[str, Any]], name: str) -> None:
    assert not is_allowed(airflow, UNCONFIGURED_READS[name])


def test_airflow_gets_the_registry_reads_as_a_policy_of_their_own(airflow: list[dict[str, Any]]) -> None:
    main, launch, registry = airflow
    assert not any(s["Sid"].startswith("Registry") for s in main["Statement"] + launch["Statement"])
    assert [s["Sid"] for s in registry["Statement"]] == [
        "RegistryEcrAuthorizationToken", "RegistryEcrPullConfiguredRepositories", "RegistryReadConfiguredSecrets",
        "RegistryReadConfiguredParameters", "RegistryDecryptThroughSecretsManagerAndSsm"]
    assert not any(s["Effect"] == "Deny" for s in registry["Statement"])  # the builder's guard is the builder's


def test_airflow_keeps_its_own_parameter(airflow: list[dict[str, Any]]) -> None:
    assert is_allowed(airflow, Request(
        "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/ml-container-cache/snapshot-id"))


def _resources(statement: dict[str, Any]) -> list[str]:
    value = statement.get("Resource", statement.get("NotResource"))
    return value if isinstance(value, list) else [value]


def test_no_wildcard_in_any_repository_or_secret_resource(
        policies: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    for policy in [policies[0], *policies[1]]:
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for resource in _resources(statement):
                if ":repository/" in resource or ":secret:" in resource:
                    assert "*" not in resource and "?" not in resource, statement
            if any(a.startswith(("ecr:", "secretsmanager:")) for a in actions) and "*" in _resources(statement):
                assert actions == ["ecr:GetAuthorizationToken"], statement  # no resource-level permissions


def test_kms_decrypts_through_each_secrets_region(policies: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    kms = next(s for s in policies[0]["Statement"] if s["Action"] == ["kms:Decrypt"])
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": [
        "secretsmanager.eu-west-1.amazonaws.com", f"secretsmanager.{REGION}.amazonaws.com",
        f"ssm.{REGION}.amazonaws.com"]}}


def test_nothing_configured_renders_no_empty_statement(tmp_path: Path) -> None:
    builder_policy, airflow_policies = render(tmp_path, {}, [])

    assert [s["Sid"] for s in builder_policy["Statement"]] == ["RegistryDenyOtherParameters"]
    assert builder_policy["Statement"][0]["Resource"] == "*"
    assert len(airflow_policies) == 2, "no registry policy for Airflow without registries (DAG calls, launch)"
    assert not any(s["Sid"].startswith("Registry") for policy in airflow_policies for s in policy["Statement"])
    assert all(_resources(s) for policy in (builder_policy, *airflow_policies) for s in policy["Statement"])
    assert not is_allowed([builder_policy, ssm_managed_instance_core()], UNCONFIGURED_READS["another parameter"])


def test_secrets_only_grant_no_ecr_and_no_key_without_a_service(tmp_path: Path) -> None:
    """A KMS key with nothing it could decrypt through, and ECR without repositories, grant nothing."""
    builder_policy, _ = render(tmp_path, {"nvcr.io": CREDENTIALS["nvcr.io"]}, [], [SECRETS_KEY])

    sids = [s["Sid"] for s in builder_policy["Statement"]]
    assert sids == ["RegistryReadConfiguredSecrets", "RegistryDecryptThroughSecretsManagerAndSsm",
                    "RegistryDenyOtherParameters"]
    assert not is_allowed(builder_policy, Request("ecr:GetAuthorizationToken", "*"))


def test_ecr_source_without_repositories_warns(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    root = tmp_path / "warn"
    root.mkdir()
    (root / "main.tf.json").write_text(json.dumps({"module": {"registry": {
        "source": str(tree / "modules" / "registry-read-policy"), "partition": "aws", "region": REGION,
        "account_id": ACCOUNT, "registry_credentials": {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"}}}}}))
    terraform = Terraform(root)
    terraform.init()

    plan = terraform.run("plan")

    assert "ecr_repository_arns is empty" in plan.stdout + plan.stderr
