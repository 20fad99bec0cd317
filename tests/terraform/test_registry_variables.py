"""The root module refuses bad registry input before anything is planned (`terraform validate`).

A configuration calls the root module with literal values, so `terraform validate` evaluates the
variable validations (they live in modules/registry-read-policy, the one definition, and in the
root for registry_endpoints) without AWS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tf_runner import Terraform, copy_tree, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

SECRET = "arn:aws:secretsmanager:us-west-2:111122223333:secret:ngc-AbCdEf"
REPOSITORY = "arn:aws:ecr:us-east-1:444455556666:repository/team/vllm"

GOOD = {
    "registry_credentials": {
        "*.dkr.ecr.*.amazonaws.com": {"source": "ecr"},
        "nvcr.io": {"source": "secretsmanager", "secret_arn": SECRET},
        "ghcr.io": {"source": "ssm_secure_parameter", "parameter_name": "/ml-container-cache/registry/ghcr"},
        "public.ecr.aws": {"source": "anonymous"},
    },
    "ecr_repository_arns": [REPOSITORY],
    "registry_endpoints": {"docker.io": "https://dockerhub-mirror.example.com", "localhost:5000": "http://127.0.0.1:5000"},
}

# name -> (inputs, text the error must carry)
BAD = {
    "unknown source": ({"registry_credentials": {"nvcr.io": {"source": "vault"}}},
                       "source must be one of ecr, secretsmanager, ssm_secure_parameter, anonymous"),
    "secretsmanager without secret_arn": ({"registry_credentials": {"nvcr.io": {"source": "secretsmanager"}}},
                                          "a secretsmanager source takes exactly secret_arn"),
    "secret ARN with a wildcard": (
        {"registry_credentials": {"nvcr.io": {"source": "secretsmanager", "secret_arn": SECRET[:-7] + "-*"}}},
        "a secretsmanager source takes exactly secret_arn"),
    "secretsmanager with a parameter too": (
        {"registry_credentials": {"nvcr.io": {"source": "secretsmanager", "secret_arn": SECRET,
                                              "parameter_name": "/x"}}},
        "a secretsmanager source takes exactly secret_arn"),
    "ssm without parameter_name": ({"registry_credentials": {"ghcr.io": {"source": "ssm_secure_parameter"}}},
                                   "an ssm_secure_parameter source takes exactly parameter_name"),
    "parameter name with a wildcard": (
        {"registry_credentials": {"ghcr.io": {"source": "ssm_secure_parameter", "parameter_name": "/registry/*"}}},
        "an ssm_secure_parameter source takes exactly parameter_name"),
    "ecr with a secret": ({"registry_credentials": {"*.dkr.ecr.*.amazonaws.com": {"source": "ecr",
                                                                                   "secret_arn": SECRET}}},
                          "ecr and anonymous sources take no secret_arn or parameter_name"),
    "host with a path": ({"registry_credentials": {"ghcr.io/org": {"source": "anonymous"}}},
                         "registry_credentials keys must be registry hosts[:port] or host patterns"),
    "repository wildcard": ({"ecr_repository_arns": ["arn:aws:ecr:us-east-1:444455556666:repository/team/*"]},
                            "a wildcard (* or ?) in the repository part"),
    "repository single-character wildcard": (
        {"ecr_repository_arns": ["arn:aws:ecr:us-east-1:444455556666:repository/te?m/vllm"]},
        "a wildcard (* or ?) in the repository part"),
    "every repository": ({"ecr_repository_arns": ["*"]}, "a wildcard (* or ?) in the repository part"),
    "repository name, not ARN": ({"ecr_repository_arns": ["team/vllm"]}, "must be full repository ARNs"),
    "key alias": ({"registry_kms_key_arns": ["arn:aws:kms:us-west-2:111122223333:alias/registry"]},
                  "aliases do not authorize kms:Decrypt"),
    "endpoint for a pattern": ({"registry_endpoints": {"*.docker.io": "https://mirror.example.com"}},
                               "registry_endpoints maps an exact registry host[:port]"),
    "endpoint with a path": ({"registry_endpoints": {"docker.io": "https://mirror.example.com/v2"}},
                             "registry_endpoints maps an exact registry host[:port]"),
}


@pytest.fixture(scope="module")
def caller(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    """An initialised configuration whose only content is a call of the root module."""
    directory = tmp_path_factory.mktemp("variables")
    tree = copy_tree(directory)
    root = directory / "caller"
    root.mkdir()
    terraform = Terraform(root)
    write_call(terraform, tree, {})
    terraform.init()
    return terraform


def write_call(terraform: Terraform, tree: Path, inputs: dict[str, Any]) -> None:
    call = {"source": str(tree), **inputs}
    (terraform.workdir / "main.tf.json").write_text(json.dumps({"module": {"ml_container_cache": call}}))


def validate(caller: Terraform, inputs: dict[str, Any]) -> str:
    write_call(caller, caller.workdir.parent / "terraform", inputs)
    result = caller.run("validate", check=False)
    return " ".join((result.stdout + result.stderr).split()) if result.returncode else ""


def test_good_input_validates(caller: Terraform) -> None:
    assert validate(caller, GOOD) == ""


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_refused_with_the_reason(caller: Terraform, name: str) -> None:
    inputs, reason = BAD[name]

    error = validate(caller, inputs)

    assert "Invalid value for variable" in error
    assert reason in error
