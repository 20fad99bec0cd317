"""Wait until the SSM agent of an instance is Online (SendCommand fails with InvalidInstanceId before)."""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

from ml_cache.hooks.ssm import CacheSsmHook


class SsmAgentOnlineTrigger(AwsBaseWaiterTrigger):
    """Polls DescribeInstanceInformation with our `agent_online` JSON waiter."""

    aws_hook_class = CacheSsmHook

    def __init__(self, *, instance_id: str, waiter_delay: int, waiter_max_attempts: int, **kwargs) -> None:
        super().__init__(
            serialized_fields={"instance_id": instance_id},
            waiter_name="agent_online",
            waiter_args={"Filters": [{"Key": "InstanceIds", "Values": [instance_id]}]},
            failure_message=f"SSM agent of {instance_id} never came online",
            status_message=f"SSM agent of {instance_id}",
            status_queries=["InstanceInformationList[].PingStatus"],
            return_key="instance_id",
            return_value=instance_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            **kwargs,
        )


class SsmCommandExecutedTrigger(AwsBaseWaiterTrigger):
    """Until the command is done on one instance (botocore `command_executed`, with our deadline).

    The provider's SsmRunCommandTrigger first lists the command's invocations and waits on each;
    right after SendCommand that list can still be empty, and an empty list reads as success.
    Waiting on the known instance retries `InvocationDoesNotExist` instead.
    """

    aws_hook_class = CacheSsmHook

    def __init__(self, *, command_id: str, instance_id: str, waiter_delay: int, waiter_max_attempts: int,
                 **kwargs) -> None:
        super().__init__(
            serialized_fields={"command_id": command_id, "instance_id": instance_id},
            waiter_name="command_executed",
            waiter_args={"CommandId": command_id, "InstanceId": instance_id},
            failure_message=f"SSM command {command_id} failed on {instance_id}",
            status_message=f"SSM command {command_id} on {instance_id}",
            status_queries=["Status", "StatusDetails"],
            return_key="command_id",
            return_value=command_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            **kwargs,
        )
