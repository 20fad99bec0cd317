"""Every policy Terraform renders fits AWS's size quota, in every configuration, and the split loses nothing.

https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: a managed policy holds 6,144
characters and a role's inline policies 10,240 together, white space not counted. The Airflow policy with
the KMS statement, the builder launch and the registry reads would not fit in one managed policy, so
Airflow gets up to three (modules/airflow-policy's `json` and `launch_json`, modules/registry-read-policy's
`json`). The modules are applied without a provider for four configurations at once, as in
test_airflow_policy.py; the size checks of the modules' outputs are exercised by a configuration too large to fit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_airflow_policy import (  # the calls and contract the main policy is tested with
    ACCOUNT,
    BASELINE_NODE_GROUP,
    BASELINE_NODE_GROUP_ARN,
    CONTRACT_ACTIONS,
    DAG_CALLS,
    INSTANCE_TYPES,
    KMS_KEY,
    MANAGED_POLICY_CHARACTERS,
    PIPELINE,
    POLICY_INPUTS,
    REFUSED_CALLS,
    REGION,
    SUBNETS,
)
from tf_iam_eval import Request, allowed_actions, is_allowed
from tf_runner import Terraform, copy_tree, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

ROLE_INLINE_POLICY_CHARACTERS = 10240
OTHER_ACCOUNT = "444455556666"
REGISTRY_ACTIONS = {
    "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer", "secretsmanager:GetSecretValue", "ssm:GetParameter", "kms:Decrypt",
}
CACHE_KMS_ACTIONS = {
    "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom", "kms:ReEncryptTo",
}


def _secret(region: str, account: str, name: str) -> str:
    return f"arn:aws:secretsmanager:{region}:{account}:secret:{name}-AbCdEf"


def _largest() -> dict[str, Any]:
    """All sources with long names: a site mirroring many registries, secrets in three regions."""
    hosts = ["nvcr.io", "docker.io", "registry.gitlab.example-enterprise.com", "quay.io", "harbor.ml.example.com",
             "artifactory.example-enterprise.com:8443", "registry.redhat.io", "gcr.io"]
    regions = [REGION, "eu-west-1", "ap-southeast-2"]
    credentials: dict[str, dict[str, str]] = {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
                                              "public.ecr.aws": {"source": "anonymous"}}
    for index, host in enumerate(hosts):
        credentials[host] = {"source": "secretsmanager", "secret_arn": _secret(
            regions[index % 3], ACCOUNT if index % 2 else OTHER_ACCOUNT,
            f"ml-platform/container-registries/{host.split(':')[0]}/pull-credentials")}
    for index in range(8):
        credentials[f"registry-{index}.internal.example-enterprise.com"] = {
            "source": "ssm_secure_parameter",
            "parameter_name": f"/ml-container-cache/registry-credentials/internal-registry-{index}/token"}
    repositories = [
        f"arn:aws:ecr:{regions[index % 3]}:{ACCOUNT if index % 2 else OTHER_ACCOUNT}:repository/"
        f"ml-platform/inference/{name}"
        for index, name in enumerate(["pytorch-training", "pytorch-inference", "vllm-openai", "triton-server",
                                      "tensorrt-llm", "text-generation-inference", "jax-tpu-bridge",
                                      "sglang-runtime", "deepspeed-mii", "nemo-framework"])]
    keys = [f"arn:aws:kms:{region}:{account}:key/mrk-1234abcd12ab34cd56ef1234567890ab"
            for region in regions for account in (ACCOUNT, OTHER_ACCOUNT)]
    # Builders in six AZs' subnets, eight fallback instance types (the policy names each).
    subnets = [*SUBNETS, *(f"subnet-0{index}23456789abcdef0" for index in range(6 - len(SUBNETS)))]
    types = [*INSTANCE_TYPES, *["c5.2xlarge", "c6a.2xlarge", "m6a.2xlarge", "c7i.2xlarge", "m7i.2xlarge",
                                "r6i.2xlarge"][:8 - len(INSTANCE_TYPES)]]
    # Two notification topics (say, the platform team's and an on-call one).
    topics = [f"arn:aws:sns:{REGION}:{ACCOUNT}:ml-container-cache-{name}-notifications" for name in ("team", "oncall")]
    return {"registry_credentials": credentials, "ecr_repository_arns": repositories, "kms_key_arns": keys,
            "kms_key_arn": KMS_KEY, "builder_subnet_ids": subnets, "builder_instance_types": types,
            "notification_topic_arns": topics, "baseline_node_group_name": BASELINE_NODE_GROUP,
            "build_log_group_arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/ml-container-cache-production/build"}


REGISTRIES = {
    "registry_credentials": {
        "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
        "nvcr.io": {"source": "secretsmanager", "secret_arn": _secret(REGION, ACCOUNT, "ngc")},
        "ghcr.io": {"source": "ssm_secure_parameter", "parameter_name": f"/{PIPELINE}/registry/ghcr"},
    },
    "ecr_repository_arns": [f"arn:aws:ecr:us-east-1:{OTHER_ACCOUNT}:repository/team/vllm"],
    "kms_key_arns": [f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"],
}
CONFIGURATIONS = {
    "default": {},
    "kms": {"kms_key_arn": KMS_KEY},
    "registries": REGISTRIES,
    "registries_and_kms": {**REGISTRIES, "kms_key_arn": KMS_KEY},
    "largest": _largest(),
}


def _modules(tree: Path, name: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """The two modules of one configuration, wired like the root module (airflow_iam.tf, cache.tf)."""
    return {
        f"{name}_registry": {
            "source": str(tree / "modules" / "registry-read-policy"),
            "partition": "aws", "region": REGION, "account_id": ACCOUNT,
            "registry_credentials": configuration.get("registry_credentials", {}),
            "ecr_repository_arns": configuration.get("ecr_repository_arns", []),
            "kms_key_arns": configuration.get("kms_key_arns", []),
        },
        f"{name}_airflow": {
            "source": str(tree / "modules" / "airflow-policy"), **POLICY_INPUTS,
            **{key: configuration[key] for key in ("builder_subnet_ids", "builder_instance_types",
                                                   "notification_topic_arns", "build_log_group_arn",
                                                   "baseline_node_group_name")
               if key in configuration},
            "kms_key_arn": configuration.get("kms_key_arn"),
        },
    }


def _outputs(name: str) -> dict[str, Any]:
    return {
        f"{name}_airflow": {"value": f"${{module.{name}_airflow.json}}"},
        f"{name}_airflow_launch": {"value": f"${{module.{name}_airflow.launch_json}}"},
        f"{name}_airflow_registry": {"value": f"${{module.{name}_registry.json}}"},
        f"{name}_builder": {"value": f"${{module.{name}_registry.builder_json}}"},
    }


def _root(directory: Path, configurations: dict[str, dict[str, Any]]) -> Terraform:
    tree = copy_tree(directory)
    root = directory / "render"
    root.mkdir()
    modules: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for name, configuration in configurations.items():
        modules |= _modules(tree, name, configuration)
        outputs |= _outputs(name)
    (root / "main.tf.json").write_text(json.dumps({"module": modules, "output": outputs}))
    terraform = Terraform(root)
    terraform.init()
    return terraform


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Every output of every configuration, as the raw text Terraform hands to IAM (None: not created)."""
    terraform = _root(tmp_path_factory.mktemp("sizes"), CONFIGURATIONS)
    terraform.apply()
    outputs = terraform.outputs()
    names = [output for name in CONFIGURATIONS for output in _outputs(name)]
    return {name: None if outputs.get(name) is None else str(outputs[name]) for name in names}


def _airflow(rendered: dict[str, str | None], name: str) -> list[dict[str, Any]]:
    """The managed policies Airflow gets in one configuration (the root's airflow_policy_arns)."""
    texts = [rendered[f"{name}_airflow"], rendered[f"{name}_airflow_launch"], rendered[f"{name}_airflow_registry"]]
    return [json.loads(text) for text in texts if text is not None]


def _aws_size(text: str) -> int:
    """Characters AWS counts: white space is not counted."""
    return len(re.sub(r"\s", "", text))


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_managed_policy_fits(rendered: dict[str, str | None], name: str) -> None:
    for output in (f"{name}_airflow", f"{name}_airflow_launch", f"{name}_airflow_registry"):
        text = rendered[output]
        assert text is None or _aws_size(text) <= MANAGED_POLICY_CHARACTERS, (output, _aws_size(text or ""))


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_builder_inline_policy_fits(rendered: dict[str, str | None], name: str) -> None:
    assert _aws_size(rendered[f"{name}_builder"] or "") <= ROLE_INLINE_POLICY_CHARACTERS


def test_the_largest_configuration_would_not_fit_in_one_policy(rendered: dict[str, str | None]) -> None:
    """Why there are three: the statements of the DAG calls and the registry reads, in one document,
    exceed the quota (and the DAG calls with the launch statements do alone, test_airflow_policy.py)."""
    main, _launch, registry = _airflow(rendered, "largest")
    merged = {"Version": "2012-10-17", "Statement": main["Statement"] + registry["Statement"]}
    assert _aws_size(json.dumps(merged)) > MANAGED_POLICY_CHARACTERS
    assert _aws_size(rendered["registries_and_kms_airflow"] or "") + _aws_size(
        rendered["registries_and_kms_airflow_launch"] or "") > MANAGED_POLICY_CHARACTERS


def test_airflow_gets_a_registry_policy_only_when_registries_are_configured(rendered: dict[str, str | None]) -> None:
    assert [len(_airflow(rendered, name)) for name in CONFIGURATIONS] == [2, 2, 3, 3, 3]


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_union_allows_each_dag_call(rendered: dict[str, str | None], name: str) -> None:
    policies = _airflow(rendered, name)
    refused = [call for call in DAG_CALLS if not is_allowed(policies, call)]
    assert refused == []


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_union_refuses_the_calls_out_of_scope(rendered: dict[str, str | None], name: str) -> None:
    policies = _airflow(rendered, name)
    allowed = [label for label, call in REFUSED_CALLS.items() if is_allowed(policies, call)]
    assert allowed == []


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_the_union_allows_exactly_the_contract_and_the_configured_reads(
        rendered: dict[str, str | None], name: str) -> None:
    configuration = CONFIGURATIONS[name]
    expected = set(CONTRACT_ACTIONS)
    if configuration.get("kms_key_arn"):
        expected |= CACHE_KMS_ACTIONS
    if configuration.get("registry_credentials"):
        expected |= REGISTRY_ACTIONS
    if configuration.get("notification_topic_arns"):
        expected |= {"sns:Publish"}
    if configuration.get("build_log_group_arn"):
        expected |= {"logs:FilterLogEvents", "logs:GetLogEvents"}
    assert set().union(*(allowed_actions(policy) for policy in _airflow(rendered, name))) == expected


def test_the_largest_configuration_reads_each_source_and_no_other(rendered: dict[str, str | None]) -> None:
    policies = _airflow(rendered, "largest")
    largest = CONFIGURATIONS["largest"]
    for credential in largest["registry_credentials"].values():
        if credential["source"] == "secretsmanager":
            assert is_allowed(policies, Request("secretsmanager:GetSecretValue", credential["secret_arn"]))
        if credential["source"] == "ssm_secure_parameter":
            arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{credential['parameter_name']}"
            assert is_allowed(policies, Request("ssm:GetParameter", arn))
    for repository in largest["ecr_repository_arns"]:
        assert is_allowed(policies, Request("ecr:BatchGetImage", repository))
    key = largest["kms_key_arns"][0]
    assert is_allowed(policies, Request("kms:Decrypt", key, {"kms:ViaService": f"ssm.{REGION}.amazonaws.com"}))
    assert not is_allowed(policies, Request("kms:Decrypt", key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}))
    assert not is_allowed(policies, Request(
        "secretsmanager:GetSecretValue", _secret(REGION, ACCOUNT, "ml-platform/container-registries/admin")))


def test_the_largest_configuration_scales_the_baseline_group(rendered: dict[str, str | None]) -> None:
    """It holds the uncached baseline too: Airflow may scale that group, nothing more."""
    policies = _airflow(rendered, "largest")
    assert is_allowed(policies, Request("eks:UpdateNodegroupConfig", BASELINE_NODE_GROUP_ARN))
    assert not is_allowed(policies, Request("eks:UpdateNodegroupVersion", BASELINE_NODE_GROUP_ARN))
    assert not is_allowed(_airflow(rendered, "default"), Request("eks:UpdateNodegroupConfig", BASELINE_NODE_GROUP_ARN))


def test_a_registry_policy_too_large_for_iam_fails_the_plan(tmp_path: Path) -> None:
    """90 secrets do not fit in a managed policy: Terraform says so instead of IAM's LimitExceeded at apply."""
    credentials = {f"registry-{index}.example.com": {
        "source": "secretsmanager", "secret_arn": _secret(REGION, ACCOUNT, f"registries/registry-{index}")}
        for index in range(90)}
    terraform = _root(tmp_path, {"huge": {"registry_credentials": credentials}})

    failed = terraform.run("apply", "-auto-approve", "-input=false", check=False)

    assert failed.returncode != 0
    assert "The registry policy exceeds the 6,144 characters of a managed policy" in failed.stderr
    assert terraform.outputs() == {}, "nothing was rendered"
