"""A push to the local cloud's ECR reaches an SQS queue through an EventBridge rule, as on AWS.

Event shape: https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest


def manifest() -> str:
    """A new image manifest each call: moto 5.2.5 derives the digest from the layer digests."""
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 2,
             "digest": f"sha256:{uuid.uuid4().hex * 2}"}
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                                  "digest": "sha256:" + "4" * 64}, "layers": [layer]})


def _setup(aws: Callable[..., Any], repositories: list[str], *, source_arn: str | None = None,
           state: str = "ENABLED") -> tuple[str, str]:
    """A rule for pushes to `repositories`, its queue, and the policy (for the rule, or `source_arn`)."""
    events, sqs = aws("events"), aws("sqs")
    name = f"ecr-push-{uuid.uuid4().hex[:8]}"
    pattern = {"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
               "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"], "repository-name": repositories}}
    rule_arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern), State=state)["RuleArn"]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": source_arn or rule_arn}}}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return name, url


def _push(aws: Callable[..., Any], repository: str, tag: str) -> str:
    ecr = aws("ecr")
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repository)
    return ecr.put_image(repositoryName=repository, imageManifest=manifest(), imageTag=tag)["image"]["imageId"][
        "imageDigest"]


def _drain(aws: Callable[..., Any], url: str) -> list[dict[str, Any]]:
    sqs, bodies = aws("sqs"), []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        bodies += [json.loads(message["Body"]) for message in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]}
                                                        for m in messages])
    return bodies


def test_a_push_to_a_watched_repository_reaches_the_queue_in_ecrs_shape(aws) -> None:
    repository = f"team/pytorch-{uuid.uuid4().hex[:6]}"
    _, url = _setup(aws, [repository])
    digest = _push(aws, repository, "2.5")
    _push(aws, f"team/unwatched-{uuid.uuid4().hex[:6]}", "latest")  # not in the rule's repositories
    (event,) = _drain(aws, url)
    assert (event["source"], event["detail-type"], event["account"], event["region"]) == (
        "aws.ecr", "ECR Image Action", "123456789012", "us-west-2")
    detail = event["detail"]
    assert {key: detail[key] for key in ("result", "action-type", "repository-name", "image-tag", "image-digest")} == {
        "result": "SUCCESS", "action-type": "PUSH", "repository-name": repository, "image-tag": "2.5",
        "image-digest": digest}
    assert digest.startswith("sha256:")


@pytest.mark.parametrize("case", ["policy names another rule", "rule disabled"])
def test_no_delivery_when_aws_would_not_deliver(aws, case: str) -> None:
    repository = f"team/x-{uuid.uuid4().hex[:6]}"
    if case == "rule disabled":
        _, url = _setup(aws, [repository], state="DISABLED")
    else:
        _, url = _setup(aws, [repository], source_arn="arn:aws:events:us-west-2:123456789012:rule/someone-else")
    _push(aws, repository, "v1")
    assert _drain(aws, url) == []


def test_queue_policy_evaluation() -> None:
    from devstack.moto_ext.events.models import queue_policy_allows

    queue, rule = "arn:aws:sqs:us-west-2:123456789012:q", "arn:aws:events:us-west-2:123456789012:rule/r"

    def policy(**statement: Any) -> str:
        base = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
                "Resource": queue}
        return json.dumps({"Statement": [{**base, **statement}]})

    assert queue_policy_allows(policy(), queue, rule, "123456789012")
    assert queue_policy_allows(policy(Condition={"ArnLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/r"}}),
                               queue, rule, "123456789012")
    assert not queue_policy_allows(None, queue, rule, "123456789012")
    assert not queue_policy_allows(policy(Principal={"Service": "sns.amazonaws.com"}), queue, rule, "123456789012")
    assert not queue_policy_allows(policy(Action="sqs:ReceiveMessage"), queue, rule, "123456789012")
    assert not queue_policy_allows(policy(Resource="arn:aws:sqs:us-west-2:123456789012:other"), queue, rule,
                                   "123456789012")
    assert not queue_policy_allows(policy(Condition={"StringEquals": {"aws:SourceAccount": "999999999999"}}),
                                   queue, rule, "123456789012")
    assert not queue_policy_allows(policy(Condition={"Bool": {"aws:SecureTransport": "true"}}), queue, rule,
                                   "123456789012")  # unknown to this model: never allows
