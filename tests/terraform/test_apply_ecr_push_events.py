"""modules/ecr-push-events applied into the local cloud: a push reaches the queue through the rule and
the queue policy Terraform wrote (the local cloud's EventBridge delivers only what that policy allows)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from tf_runner import REPO, Terraform, skip_reason

pytestmark = [pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""), pytest.mark.slow]

REGION = "us-west-2"
MAIN_TF = """
provider "aws" {{
  region                      = "{region}"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {{
    events = "{endpoint}"
    sqs    = "{endpoint}"
    sts    = "{endpoint}"
  }}
}}

module "push" {{
  source           = "{module}"
  name             = "{name}"
  repository_names = ["team/watched"]
}}

output "queue_url" {{ value = module.push.queue_url }}
output "dead_letter_queue_url" {{ value = module.push.dead_letter_queue_url }}
output "rule_arn" {{ value = module.push.rule_arn }}
"""


@pytest.fixture(scope="module")
def applied(local_cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], str]]:
    if local_cloud.kind != "devstack":
        pytest.skip("ECR push events need devstack's moto extension")
    workdir: Path = tmp_path_factory.mktemp("ecr-push-events")
    name = f"push-{uuid.uuid4().hex[:6]}"
    (workdir / "main.tf").write_text(MAIN_TF.format(region=REGION, endpoint=local_cloud.endpoint, name=name,
                                                    module=REPO / "terraform" / "modules" / "ecr-push-events"))
    terraform = Terraform(workdir)
    terraform.init()
    terraform.apply()
    try:
        yield terraform.outputs(), local_cloud.endpoint
    finally:
        terraform.destroy()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _push(endpoint: str, repository: str) -> str:
    ecr = _client("ecr", endpoint)
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repository)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                           "digest": "sha256:" + "4" * 64},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 2,
                            "digest": f"sha256:{uuid.uuid4().hex * 2}"}]}  # moto's digest: from the layers
    return ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest),
                         imageTag="v1")["image"]["imageId"]["imageDigest"]


def test_a_push_to_a_named_repository_reaches_the_queue_and_others_do_not(applied) -> None:
    outputs, endpoint = applied
    sqs = _client("sqs", endpoint)
    digest = _push(endpoint, "team/watched")
    _push(endpoint, "team/other")
    messages = sqs.receive_message(QueueUrl=outputs["queue_url"], MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["detail"]["image-digest"] for m in messages] == [digest]
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["queue_url"], AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 5
    statement = json.loads(attributes["Policy"])["Statement"][0]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": outputs["rule_arn"]}}
    assert sqs.receive_message(QueueUrl=outputs["dead_letter_queue_url"]).get("Messages") is None
