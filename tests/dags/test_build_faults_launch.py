"""Launch errors that another (instance type, subnet) cannot cure (fault catalog 7), injected into
RunInstances on the local cloud with a botocore `before-call` hook: the launch fails at the first try
naming the code, tries no other candidate and leaves no instance."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from botocore.awsrequest import AWSResponse

from ml_cache.errors import PermanentFailure
from ml_cache.operators.builder import LaunchBuilderOperator
from ml_cache.settings import BuildSettings
from ml_cache.steps import build as steps

RUN_ID = "manual__launch-faults"
AMI = "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"


@pytest.mark.parametrize(("code", "message"), [
    ("Unsupported", "Your requested instance type (c6i.2xlarge) is not supported in your requested Availability Zone"),
    ("InstanceLimitExceeded", "You have requested more instances (1) than your current instance limit of 0 allows"),
])
def test_a_launch_error_no_other_candidate_cures_fails_at_the_first(cloud, code, message):
    settings = BuildSettings.model_validate(steps.validate_inputs(None, aws_conn_id="aws_default"))
    ami = cloud.client("ssm").get_parameter(Name=AMI)["Parameter"]["Value"]
    operator = LaunchBuilderOperator(task_id="launch_builder", launch=settings.builder_launch, image_id=ami,
                                     volume_size_gib=2)
    calls = []

    def refuse(model, params, **_):
        calls.append(model.name)
        return AWSResponse("https://ec2", 400, {}, None), {
            "Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}

    operator.hook.conn.meta.events.register("before-call.ec2.RunInstances", refuse)
    before = cloud.instance_count()
    context = {"ti": SimpleNamespace(run_id=RUN_ID, dag_id="ml_container_cache_build", task_id="launch_builder",
                                     map_index=-1, try_number=1, max_tries=2, task=SimpleNamespace(retries=2))}
    with pytest.raises(PermanentFailure, match=re.escape(f"{code}: {message}")) as failed:  # no retry burnt
        operator.execute(context)
    assert "c6i.2xlarge" in str(failed.value)
    assert calls == ["RunInstances"]  # m6i.2xlarge, the next candidate, is not tried
    assert cloud.instance_count() == before
