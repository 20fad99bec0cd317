"""Wait for an EKS node group update (boto3 has no waiter for DescribeUpdate)."""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

from ml_cache.hooks.eks import CacheEksHook


class NodegroupUpdateTrigger(AwsBaseWaiterTrigger):
    """Until the update is Successful; Failed or Cancelled end the wait (our JSON waiter)."""

    aws_hook_class = CacheEksHook

    def __init__(self, *, cluster: str, nodegroup: str, update_id: str, waiter_delay: int,
                 waiter_max_attempts: int, **kwargs) -> None:
        super().__init__(
            serialized_fields={"cluster": cluster, "nodegroup": nodegroup, "update_id": update_id},
            waiter_name="nodegroup_update_successful",
            waiter_args={"name": cluster, "nodegroupName": nodegroup, "updateId": update_id},
            failure_message=f"Update {update_id} of node group {nodegroup} did not succeed",
            status_message=f"Update {update_id} of node group {nodegroup}",
            status_queries=["update.status", "update.errors"],
            return_key="update_id",
            return_value=update_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            **kwargs,
        )
