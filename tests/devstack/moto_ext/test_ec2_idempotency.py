"""RunInstances ClientToken in the local cloud, as EC2 honours it (devstack/moto_ext/ec2/idempotency.py).

https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html: the same token and parameters
return the earlier result (only e.g. the state may differ), also for 24 hours after the instance
terminated; the same token with other parameters (Region and Availability Zone aside) is
IdempotentParameterMismatch.
"""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from tests.devstack.conftest import EKS_AMI


@pytest.fixture
def run(ec2, ssm):
    """RunInstances of one small instance with `token`; every instance launched is terminated after the test."""
    image_id = ssm.get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
    launched: set[str] = set()

    def launch(token: str, instance_type: str = "c6i.large", **extra) -> dict:
        answer = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType=instance_type,
                                   ClientToken=token, **extra)
        launched.update(i["InstanceId"] for i in answer["Instances"])
        return answer

    yield launch
    if launched:
        ec2.terminate_instances(InstanceIds=sorted(launched))


def _count(ec2) -> int:
    return sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])


def test_the_same_token_returns_the_same_reservation_and_launches_nothing(ec2, run) -> None:
    token = f"test-{uuid.uuid4()}"
    first = run(token)
    before = _count(ec2)
    again = run(token)
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [i["InstanceId"] for i in first["Instances"]]
    assert _count(ec2) == before
    described = ec2.describe_instances(InstanceIds=[first["Instances"][0]["InstanceId"]])
    assert described["Reservations"][0]["Instances"][0]["ClientToken"] == token


def test_another_token_launches_another_instance(run) -> None:
    assert run(f"test-{uuid.uuid4()}")["Instances"][0]["InstanceId"] != run(f"test-{uuid.uuid4()}")["Instances"][0][
        "InstanceId"]


def test_the_same_token_with_other_parameters_is_a_mismatch(ec2, run) -> None:
    token = f"test-{uuid.uuid4()}"
    run(token)
    before = _count(ec2)
    with pytest.raises(ClientError) as refused:
        run(token, instance_type="m6i.large")
    assert refused.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "inconsistent with arguments used in previous request" in refused.value.response["Error"]["Message"]
    assert _count(ec2) == before


def test_the_availability_zone_is_not_compared(run) -> None:
    token = f"test-{uuid.uuid4()}"
    first = run(token, Placement={"AvailabilityZone": "us-west-2a"})
    again = run(token, Placement={"AvailabilityZone": "us-west-2b"})
    assert again["ReservationId"] == first["ReservationId"]


def test_tokens_are_per_region(aws, ssm, run) -> None:
    token = f"test-{uuid.uuid4()}"
    first = run(token)
    other = aws("ec2", "eu-west-1")
    image_id = aws("ssm", "eu-west-1").get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
    elsewhere = other.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="c6i.large",
                                    ClientToken=token)
    other.terminate_instances(InstanceIds=[elsewhere["Instances"][0]["InstanceId"]])
    assert elsewhere["ReservationId"] != first["ReservationId"]


def test_a_terminated_instance_answers_its_token_for_24_hours_then_the_token_is_free(ec2, run,
                                                                                     advance_clock) -> None:
    token = f"test-{uuid.uuid4()}"
    first = run(token)["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[first])
    advance_clock(23 * 3600)
    before = _count(ec2)
    assert run(token)["Instances"][0]["InstanceId"] == first  # moto's RunInstances answer always says pending
    assert _count(ec2) == before
    described = ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] == "terminated"
    advance_clock(3600 + 60)
    fresh = run(token)["Instances"][0]
    assert fresh["InstanceId"] != first
    assert fresh["State"]["Name"] in ("pending", "running")


def test_a_request_without_a_token_always_launches(ec2, ssm) -> None:
    image_id = ssm.get_parameter(Name=EKS_AMI)["Parameter"]["Value"]
    ids = [ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="c6i.large")["Instances"][0][
        "InstanceId"] for _ in range(2)]
    ec2.terminate_instances(InstanceIds=ids)
    assert ids[0] != ids[1]


def test_run_instances_errors_fault_answers_each_code_once(ec2, run, set_faults) -> None:
    set_faults(run_instances_errors=["UnauthorizedOperation", "RequestLimitExceeded"])
    answers = []
    for _ in range(2):
        with pytest.raises(ClientError) as refused:
            run(f"test-{uuid.uuid4()}")
        answers.append((refused.value.response["Error"]["Code"],
                        refused.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert answers == [("UnauthorizedOperation", 400), ("RequestLimitExceeded", 503)]
    assert run(f"test-{uuid.uuid4()}")["Instances"][0]["State"]["Name"] in ("pending", "running")
