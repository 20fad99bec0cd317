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
