"""ECR GetAuthorizationToken in the local cloud and the rules its tokens are checked by (moto_ext/ecr)."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest

from devstack import clock  # the cloud's time: tests may have advanced it
from devstack.moto_ext.ecr import models


def _password(answer: dict) -> str:
    user, _, password = base64.b64decode(answer["authorizationData"][0]["authorizationToken"]).decode().partition(":")
    assert user == "AWS"
    return password


def test_each_call_issues_its_own_token_valid_12_hours_with_the_proxy_endpoint(aws) -> None:
    ecr = aws("ecr", "us-west-2")
    first, second = ecr.get_authorization_token(), ecr.get_authorization_token()
    assert _password(first) != _password(second)
    data = first["authorizationData"][0]
    # https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html: valid 12 hours
    assert abs(data["expiresAt"] - (clock.now() + timedelta(hours=12))) < timedelta(minutes=1)
    assert data["proxyEndpoint"] == "https://123456789012.dkr.ecr.us-west-2.amazonaws.com"


def test_the_token_lifetime_fault_shortens_new_tokens(aws, set_faults) -> None:
    set_faults(ecr_token_seconds=30)
    data = aws("ecr", "eu-west-1").get_authorization_token()["authorizationData"][0]
    assert abs(data["expiresAt"] - clock.now()) < timedelta(seconds=35)
    assert data["proxyEndpoint"] == "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def test_a_token_is_recorded_with_the_callers_account(aws, cloud) -> None:
    import boto3

    credentials = aws("sts").assume_role(RoleArn="arn:aws:iam::210987654321:role/puller",
                                         RoleSessionName="puller")["Credentials"]
    ecr = boto3.client("ecr", region_name="us-west-2", endpoint_url=cloud.endpoint,
                       aws_access_key_id=credentials["AccessKeyId"],
                       aws_secret_access_key=credentials["SecretAccessKey"],
                       aws_session_token=credentials["SessionToken"])
    answer = ecr.get_authorization_token()
    assert answer["authorizationData"][0]["proxyEndpoint"] == "https://210987654321.dkr.ecr.us-west-2.amazonaws.com"
    token = models.check_pull(_password(answer), "123456789012.dkr.ecr.us-west-2.amazonaws.com", None)
    assert (token.account, token.region) == ("210987654321", "us-west-2")
    with pytest.raises(models.Denied) as denied:
        models.check_pull(_password(answer), "123456789012.dkr.ecr.us-west-2.amazonaws.com", "no-such-repository")
    assert denied.value.status == 404  # ECR names a missing repository before it checks the account


def test_an_expired_token_is_refused_with_ecrs_text(aws, set_faults) -> None:
    set_faults(ecr_token_seconds=0.2)
    password = _password(aws("ecr", "us-west-2").get_authorization_token())
    models.check_pull(password, "123456789012.dkr.ecr.us-west-2.amazonaws.com", None)
    time.sleep(0.3)
    with pytest.raises(models.Denied) as denied:
        models.check_pull(password, "123456789012.dkr.ecr.us-west-2.amazonaws.com", None)
    assert (denied.value.status, denied.value.message) == (403, models.EXPIRED)
    assert "Reauthenticate" in models.EXPIRED


def test_a_token_works_only_in_its_region(aws) -> None:
    password = _password(aws("ecr", "eu-west-1").get_authorization_token())
    models.check_pull(password, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", None)
    with pytest.raises(models.Denied) as denied:
        models.check_pull(password, "123456789012.dkr.ecr.us-west-2.amazonaws.com", None)
    assert (denied.value.status, denied.value.message) == (403, models.OTHER_REGION)


def test_an_unknown_token_is_not_authorized() -> None:
    with pytest.raises(models.Denied) as denied:
        models.check_pull("never-issued", "123456789012.dkr.ecr.us-west-2.amazonaws.com", None)
    assert (denied.value.status, denied.value.code) == (401, "DENIED")


@pytest.mark.parametrize("host", ["123456789012.dkr.ecr.us-west-2.amazonaws.com.evil", "1234.dkr.ecr.x.amazonaws.com",
                                  "registry.example.com"])
def test_only_ecr_host_names_name_an_account_and_region(host: str) -> None:
    with pytest.raises(ValueError, match="not an ECR registry host"):
        models.split_host(host)
    assert models.split_host("123456789012.dkr.ecr.ap-south-1.amazonaws.com") == ("123456789012", "ap-south-1")


def test_a_repository_policy_grants_another_account_pull() -> None:
    def policy(principal: object, action: object, effect: str = "Allow") -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": effect, "Principal": {"AWS": principal}, "Action": action}]})

    assert models.policy_allows_pull(policy("arn:aws:iam::210987654321:root", "ecr:BatchGetImage"), "210987654321")
    assert models.policy_allows_pull(policy(["210987654321"], ["ecr:*"]), "210987654321")
    assert not models.policy_allows_pull(policy("arn:aws:iam::111111111111:root", "ecr:*"), "210987654321")
    assert not models.policy_allows_pull(policy("*", "ecr:PutImage"), "210987654321")
    assert not models.policy_allows_pull(policy("*", "ecr:*", "Deny"), "210987654321")
    assert not models.policy_allows_pull(None, "210987654321")
