"""CacheSsmHook: parameters and the build document on moto; the agent_online waiter on the local cloud."""

from __future__ import annotations

import json
import uuid

import pytest

from ml_cache.hooks.ssm import CacheSsmHook


def _name(kind: str) -> str:
    return f"/hooks-test/{kind}-{uuid.uuid4()}"


def _document(echo: str) -> str:
    return json.dumps({
        "schemaVersion": "2.2", "description": "hooks test",
        "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": [f"echo {echo}"]}}],
    })


def test_get_parameter_of_a_missing_name_is_none(moto_conn) -> None:
    assert CacheSsmHook(aws_conn_id=moto_conn.conn_id).get_parameter(_name("missing")) is None


def test_put_parameter_returns_each_new_version_and_get_reads_the_latest(moto_conn) -> None:
    hook = CacheSsmHook(aws_conn_id=moto_conn.conn_id)
    name = _name("snapshot-id")
    assert hook.put_parameter(name, "snap-0aaaaaaaaaaaaaaaa", description="the cache") == 1
    assert hook.put_parameter(name, "snap-0bbbbbbbbbbbbbbbb") == 2  # overwrites
    parameter = hook.get_parameter(name)
    assert (parameter["Value"], parameter["Version"], parameter["Type"]) == ("snap-0bbbbbbbbbbbbbbbb", 2, "String")
    assert "LastModifiedDate" in parameter


def test_put_parameter_sets_description_and_tier(moto_conn) -> None:
    hook = CacheSsmHook(aws_conn_id=moto_conn.conn_id)
    name = _name("metadata")
    hook.put_parameter(name, json.dumps({"k": "v" * 5000}), description="metadata", tier="Advanced")
    described = moto_conn.client("ssm").describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"][0]
    assert (described["Description"], described["Tier"]) == ("metadata", "Advanced")


def test_put_parameter_error_is_raised_not_swallowed(moto_conn) -> None:
    hook = CacheSsmHook(aws_conn_id=moto_conn.conn_id)
    with pytest.raises(hook.conn.exceptions.ClientError, match="AccessDeniedException"):
        hook.put_parameter("/aws/service/reserved", "snap-0aaaaaaaaaaaaaaaa")


def test_describe_document_of_a_missing_name_is_none(moto_conn) -> None:
    assert CacheSsmHook(aws_conn_id=moto_conn.conn_id).describe_document(f"missing-{uuid.uuid4()}") is None


def test_document_created_updated_and_defaulted(moto_conn) -> None:
    hook = CacheSsmHook(aws_conn_id=moto_conn.conn_id)
    name = f"hooks-test-{uuid.uuid4()}"
    created = hook.create_document(name, _document("v1"), {"ml-cache:pipeline": "hooks-test"})
    assert (created["Name"], created["DocumentVersion"], created["DocumentType"]) == (name, "1", "Command")
    assert created["Tags"] == [{"Key": "ml-cache:pipeline", "Value": "hooks-test"}]
    updated = hook.update_document(name, _document("v2"))
    assert (updated["DocumentVersion"], updated["DefaultVersion"]) == ("2", "1")
    assert "echo v1" in hook.get_document_content(name, "1")
    assert "echo v2" in hook.get_document_content(name, "2")
    hook.set_default_document_version(name, "2")
    described = hook.describe_document(name)
    assert (described["DefaultVersion"], described["LatestVersion"]) == ("2", "2")


def test_update_document_with_the_same_content_is_an_error(moto_conn) -> None:
    hook = CacheSsmHook(aws_conn_id=moto_conn.conn_id)
    name = f"hooks-test-{uuid.uuid4()}"
    hook.create_document(name, _document("same"), {})
    with pytest.raises(hook.conn.exceptions.DuplicateDocumentContent):
        hook.update_document(name, _document("same"))


def test_agent_online_waiter_is_ours_and_polls_describe_instance_information(cloud_conn) -> None:
    """moto lacks DescribeInstanceInformation: the local cloud's agent answers it."""
    hook = CacheSsmHook(aws_conn_id=cloud_conn.conn_id)
    assert "agent_online" in hook.list_waiters()
    cloud_conn.set_faults(agent_online_seconds=0)
    ec2 = cloud_conn.client("ec2")
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        hook.get_waiter("agent_online").wait(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}],
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])
