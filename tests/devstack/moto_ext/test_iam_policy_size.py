"""IAM's managed policy size quota in the local cloud (moto_ext/iam): CreatePolicy(Version) as AWS answers them."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from moto.iam.exceptions import LimitExceededException

from devstack.moto_ext.iam import models


def _document(characters: int, *, indent: int | None = None) -> str:
    """A valid policy of exactly `characters` characters as IAM counts them (no white space)."""
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/"}
    base = len(json.dumps({"Version": "2012-10-17", "Statement": [statement]}, separators=(",", ":")))
    statement["Resource"] += "k" * (characters - base)
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]},
                      indent=indent, separators=(",", ":") if indent is None else (", ", ": "))


def test_the_rule_counts_every_character_but_white_space() -> None:
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: 6,144, white space not counted
    assert models.MANAGED_POLICY_CHARACTERS == 6144
    assert models.managed_policy_size(_document(6144)) == 6144
    assert models.managed_policy_size(_document(6144, indent=4)) == 6144
    models.check_managed_policy_size(_document(6144, indent=4))
    with pytest.raises(LimitExceededException, match="Cannot exceed quota for PolicySize: 6144"):
        models.check_managed_policy_size(_document(6145))


def test_create_policy_at_the_quota_succeeds_even_indented(aws) -> None:
    iam = aws("iam")
    arn = iam.create_policy(PolicyName="at-quota", PolicyDocument=_document(6144, indent=2))["Policy"]["Arn"]
    try:
        assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v1"
    finally:
        iam.delete_policy(PolicyArn=arn)


def test_create_policy_over_the_quota_fails_with_limit_exceeded_and_creates_nothing(aws) -> None:
    iam = aws("iam")
    with pytest.raises(ClientError) as failed:
        iam.create_policy(PolicyName="over-quota", PolicyDocument=_document(6145))
    assert failed.value.response["Error"]["Code"] == "LimitExceeded"
    assert failed.value.response["Error"]["Message"] == "Cannot exceed quota for PolicySize: 6144"
    assert "over-quota" not in {p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]}


def test_create_policy_version_over_the_quota_fails_and_keeps_the_default(aws) -> None:
    iam = aws("iam")
    arn = iam.create_policy(PolicyName="grows", PolicyDocument=_document(200))["Policy"]["Arn"]
    try:
        with pytest.raises(ClientError) as failed:
            iam.create_policy_version(PolicyArn=arn, PolicyDocument=_document(6145), SetAsDefault=True)
        assert failed.value.response["Error"]["Code"] == "LimitExceeded"
        assert "PolicySize: 6144" in failed.value.response["Error"]["Message"]
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        assert [(v["VersionId"], v["IsDefaultVersion"]) for v in versions] == [("v1", True)]
    finally:
        iam.delete_policy(PolicyArn=arn)
