"""RunBuilderScriptOperator sends the product's spec as one base64 parameter, and fails naming the cause.

Over SSM Run Command of the local cloud, whose agent really runs the document on a builder
instance. The document is ours (ssm_document.build_document: its bootstrap, the shipped helpers
and schema), with a probe in place of build_cache.sh: the builder's side of the contract, without
containerd and volumes.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from airflow.exceptions import TaskDeferred

from ml_cache.errors import PermanentFailure
from ml_cache.operators.build_script import RunBuilderScriptOperator
from ml_cache.ssm_document import build_document, shipped_files
from tests.devstack.conftest import cloud, wait_invocation, wait_online  # noqa: F401 - the session's local cloud

REGION = "us-west-2"
EKS_AMI = "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
DIGEST = "sha256:" + "7" * 64
NGC_SECRET = "arn:aws:secretsmanager:us-west-2:111122223333:secret:ngc-AbC"
ARGS = {"images": [f"nvcr.io/nvidia/pytorch:24.05-py3@{DIGEST}"], "platform": "linux/amd64", "pull_parallelism": 2,
        "registry_credentials": {"nvcr.io": {"source": "secretsmanager", "secret_arn": NGC_SECRET}},
        "registry_endpoints": {"nvcr.io": "https://nvcr-mirror.example.com"},
        "timeout_seconds": 3600, "poll_seconds": 15}
DATA_VOLUME = "vol-0123456789abcdef0"
# the builder's side: what it received in SSM_spec, then what the shipped helpers make of it
PROBE = """\
here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
printf '%s' "$SSM_spec" | base64 -d >"$here/spec.json"
cat "$here/spec.json"; echo
python3 "$here/build_cache_helpers.py" parse-spec "$here/spec.json"
"""
# a build that fails as build_cache.sh does: a log line, the cause on stderr, non-zero exit
FAILING = """\
image="$(printf '%s' "$SSM_spec" | base64 -d | python3 -c 'import json, sys; print(json.load(sys.stdin)["images"][0])')"
echo "07:00:00 build_cache: pulling $image" >&2
echo "07:00:01 build_cache: ERROR: pull failed: $image" >&2
exit 1
"""
OTHER_VERSION = 'echo "not the version the operator was given" >&2; exit 3\n'


@pytest.fixture
def ssm(cloud, monkeypatch) -> Any:  # noqa: F811
    """`aws_default` pointing at the local cloud (the operator's hook), and a client for the test."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "testing",
         "extra": {"region_name": REGION, "endpoint_url": cloud.endpoint}}))
    return aws(cloud, "ssm")


def aws(handle: Any, service: str) -> Any:
    return boto3.client(service, endpoint_url=handle.endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def builder(cloud, ssm) -> Iterator[dict[str, str]]:  # noqa: F811
    """A running instance whose SSM agent is online."""
    ec2 = aws(cloud, "ec2")
    image_id = ssm.get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
    instance_id = ec2.run_instances(ImageId=image_id, InstanceType="c6i.2xlarge", MinCount=1,
                                    MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        wait_online(ssm, instance_id)
        yield {"instance_id": instance_id, "data_volume_id": DATA_VOLUME}
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])


def register(ssm: Any, script: str) -> dict[str, str]:
    """Our document with `script` as build_cache.sh, as a new version beside a default one that
    fails otherwise: what ran says which version was asked for (ListCommands does not say)."""
    name = f"ml-cache-test-{uuid.uuid4().hex[:8]}"

    def content(build_cache_sh: str) -> str:
        return build_document({**shipped_files(), "build_cache.sh": build_cache_sh})

    ssm.create_document(Name=name, Content=content(OTHER_VERSION), DocumentType="Command", DocumentFormat="JSON")
    described = ssm.update_document(Name=name, Content=content(script), DocumentVersion="$LATEST",
                                    DocumentFormat="JSON")["DocumentDescription"]
    return {"name": name, "version": described["DocumentVersion"], "sha256": described["Hash"]}


def operator(builder: dict[str, str], document: dict[str, str], args: dict[str, Any] = ARGS
             ) -> RunBuilderScriptOperator:
    return RunBuilderScriptOperator(task_id="run_build_script", action="build", builder=builder, document=document,
                                    **args)


def sent(ssm: Any, instance_id: str) -> list[dict[str, Any]]:
    return ssm.list_commands(InstanceId=instance_id)["Commands"]


def test_sends_the_spec_the_builder_parses(ssm, builder) -> None:
    document = register(ssm, PROBE)
    pushed: dict[str, Any] = {}
    task = operator(builder, document)
    ti = SimpleNamespace(run_id="manual__1", xcom_push=lambda key, value: pushed.__setitem__(key, value))
    with pytest.raises(TaskDeferred):
        task.execute({"ti": ti})
    (command,) = sent(ssm, builder["instance_id"])
    (link,) = task.operator_extra_links  # the console link to this very invocation
    assert link.format_link(**pushed[link.key]) == (
        f"https://console.aws.amazon.com/systems-manager/run-command/{command['CommandId']}/"
        f"{builder['instance_id']}?region={REGION}")
    assert command["DocumentName"] == document["name"] and document["version"] == "2"
    assert command["Parameters"]["executionTimeout"] == ["3600"]
    assert command["Comment"] == "ml-container-cache build manual__1"
    (encoded,) = command["Parameters"]["spec"]
    spec = json.loads(base64.b64decode(encoded))
    assert spec["volume_id"] == DATA_VOLUME

    invocation = wait_invocation(ssm, command["CommandId"], builder["instance_id"])
    assert invocation["Status"] == "Success", invocation["StandardErrorContent"]  # version 2 ran
    received, *parsed = invocation["StandardOutputContent"].splitlines()
    assert json.loads(received) == spec  # as data, through the environment
    assert "parallel=2" in parsed and f"credential=nvcr.io secretsmanager us-west-2 {NGC_SECRET}" in parsed
    assert "endpoint=nvcr.io https://nvcr-mirror.example.com" in parsed


def test_a_spec_the_schema_refuses_is_never_sent(ssm, builder) -> None:
    with pytest.raises(PermanentFailure, match=r"spec\['parallel'\]: 99"):
        operator(builder, register(ssm, PROBE), {**ARGS, "pull_parallelism": 99}).execute(
            {"ti": SimpleNamespace(run_id="r")})
    assert sent(ssm, builder["instance_id"]) == []


def test_failure_quotes_the_scripts_stderr(ssm, builder) -> None:
    task = operator(builder, register(ssm, FAILING))
    with pytest.raises(TaskDeferred):
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    (command,) = sent(ssm, builder["instance_id"])
    command_id = command["CommandId"]
    assert wait_invocation(ssm, command_id, builder["instance_id"])["Status"] == "Failed"
    with pytest.raises(RuntimeError, match=rf"ended Failed \(exit code 1, command {command_id}\)[\s\S]*"
                                           r"ERROR: pull failed: nvcr.io/nvidia/pytorch:24.05-py3"):
        task.execute_complete({}, {"status": "failure", "command_id": command_id})


def test_a_document_changed_under_its_version_never_runs(ssm, builder) -> None:
    """SendCommand pins the hash register_build_script took: the document deleted and re-created with other
    content under the same version number is refused by SSM, at the first try, and nothing runs on the builder."""
    document = register(ssm, PROBE)
    ssm.delete_document(Name=document["name"])  # IAM allows it on our name; the next build re-creates it
    rewritten = build_document({**shipped_files(), "build_cache.sh": FAILING})
    ssm.create_document(Name=document["name"], Content=rewritten, DocumentType="Command", DocumentFormat="JSON")
    assert ssm.update_document(Name=document["name"], Content=rewritten + " ", DocumentVersion="$LATEST",
                               DocumentFormat="JSON")["DocumentDescription"]["DocumentVersion"] == document["version"]
    with pytest.raises(PermanentFailure, match="InvalidDocument") as refused:
        operator(builder, document).execute({"ti": SimpleNamespace(run_id="manual__1")})
    assert f"does not match the Sha256 hash {document['sha256']}" in str(refused.value)
    assert sent(ssm, builder["instance_id"]) == []


def test_with_a_log_group_the_output_streams_and_the_trigger_reads_it(cloud, ssm, builder) -> None:  # noqa: F811
    task = operator(builder, register(ssm, FAILING), {**ARGS, "log_group": "/test/build-script"})
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    (command,) = sent(ssm, builder["instance_id"])
    command_id, instance_id = command["CommandId"], builder["instance_id"]
    assert command["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "/test/build-script",
                                                 "CloudWatchOutputEnabled": True}
    trigger = deferred.value.trigger
    assert (trigger.log_group, trigger.log_stream) == ("/test/build-script",
                                                       f"{command_id}/{instance_id}/buildCache/stderr")
    assert wait_invocation(ssm, command_id, instance_id)["Status"] == "Failed"
    events = aws(cloud, "logs").get_log_events(logGroupName=trigger.log_group, logStreamName=trigger.log_stream,
                                               startFromHead=True)["events"]
    assert events[-1]["message"].endswith("ERROR: pull failed: nvcr.io/nvidia/pytorch:24.05-py3@" + DIGEST)


def test_the_failure_prefers_the_triggers_stderr_tail_and_never_quotes_progress(ssm, builder) -> None:
    progress = ('python3 "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/build_cache_helpers.py" '
                "progress pulled a/b:1 1\n")
    task = operator(builder, register(ssm, progress + FAILING))
    with pytest.raises(TaskDeferred):
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    (command,) = sent(ssm, builder["instance_id"])
    command_id = command["CommandId"]
    invocation = wait_invocation(ssm, command_id, builder["instance_id"])
    assert "ml-cache-progress " in invocation["StandardErrorContent"]
    with pytest.raises(RuntimeError) as failed:
        task.execute_complete({}, {"status": "failure", "command_id": command_id})
    assert "ERROR: pull failed" in str(failed.value) and "ml-cache-progress" not in str(failed.value)
    with pytest.raises(RuntimeError, match=r"stderr tail:\nthe last lines CloudWatch Logs held$"):
        task.execute_complete({}, {"status": "failure", "command_id": command_id,
                                   "stderr_tail": "the last lines CloudWatch Logs held"})


# --- retries: this run's command is found by its Comment ----------------------------------------

SLOW = "sleep 4\n"


def _command_of(deferred: pytest.ExceptionInfo[TaskDeferred]) -> str:
    return deferred.value.trigger.serialized_fields["command_id"]


def test_a_retry_after_the_command_succeeded_uses_its_result_and_sends_nothing(ssm, builder) -> None:
    """apache/airflow#71580 can fail the try whose trigger fired at once although the command succeeded: the
    retry takes that command's result (sending again would rerun the build and replace its report)."""
    task = operator(builder, register(ssm, PROBE))
    with pytest.raises(TaskDeferred) as first:
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    assert wait_invocation(ssm, _command_of(first), builder["instance_id"])["Status"] == "Success"
    assert task.execute({"ti": SimpleNamespace(run_id="manual__1")}) == _command_of(first)
    assert len(sent(ssm, builder["instance_id"])) == 1
    with pytest.raises(TaskDeferred) as other_run:  # another run's command is never taken
        task.execute({"ti": SimpleNamespace(run_id="manual__2")})
    assert _command_of(other_run) != _command_of(first) and len(sent(ssm, builder["instance_id"])) == 2


def test_a_retry_while_the_command_runs_waits_for_it_instead_of_a_second_script(ssm, builder) -> None:
    task = operator(builder, register(ssm, SLOW))
    with pytest.raises(TaskDeferred) as first:
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    deadline = time.monotonic() + 10  # SSM lists an invocation a moment after SendCommand (a retry: >= 1 min)
    while not ssm.list_command_invocations(InstanceId=builder["instance_id"])["CommandInvocations"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(TaskDeferred) as retried:  # a worker lost mid-wait: the retry finds it running
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    assert _command_of(retried) == _command_of(first) and len(sent(ssm, builder["instance_id"])) == 1


def test_a_retry_after_the_script_failed_sends_it_again(ssm, builder) -> None:
    """An exit code may be a registry's hiccup: that is what the retry is for."""
    task = operator(builder, register(ssm, FAILING))
    with pytest.raises(TaskDeferred) as first:
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    assert wait_invocation(ssm, _command_of(first), builder["instance_id"])["Status"] == "Failed"
    with pytest.raises(TaskDeferred) as retried:
        task.execute({"ti": SimpleNamespace(run_id="manual__1")})
    assert _command_of(retried) != _command_of(first) and len(sent(ssm, builder["instance_id"])) == 2
