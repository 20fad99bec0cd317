"""Move the GPU node group to a launch template version: the rollout and its rollback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from botocore.exceptions import ClientError

from ml_cache.hooks.eks import CacheEksHook
from ml_cache.operators.base import CacheAwsOperator, waiter_attempts
from ml_cache.tags import client_token
from ml_cache.triggers.eks import NodegroupUpdateTrigger


class NodegroupUpdateFailed(RuntimeError):
    """The node group update ended Failed or Cancelled, or never started."""


class UpdateNodegroupOperator(CacheAwsOperator[CacheEksHook]):
    """UpdateNodegroupVersion to `version` of our launch template, then defer until Successful.

    The clientRequestToken derives from dag/run/task/map index and the version, so a retried task
    joins its own update instead of starting another. An update already in progress
    (ResourceInUseException) means: wait, then retry with the same token. `force` only when asked.
    With `skip_if_current`, a node group already on `version` is left alone (nothing to roll back).
    """

    aws_hook_class = CacheEksHook
    template_fields: Sequence[str] = aws_template_fields(
        "cluster_name", "node_group_name", "launch_template_id", "version", "force", "timeout_seconds",
        "poll_seconds")

    def __init__(self, *, cluster_name: str, node_group_name: str, launch_template_id: str, version: str | None,
                 force: bool, timeout_seconds: int, poll_seconds: int, skip_if_current: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.node_group_name = node_group_name
        self.launch_template_id = launch_template_id
        self.version = version
        self.force = force
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds
        self.skip_if_current = skip_if_current

    def execute(self, context: Any, event: dict[str, Any] | None = None, attempt: int = 0) -> dict[str, Any]:
        if self.version in (None, "None", ""):
            raise AirflowSkipException("No launch template version to move to: the update never started")
        cluster, nodegroup = self.cluster_name, self.node_group_name
        if self.skip_if_current:
            current = self.hook.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)["nodegroup"]
            if str(current.get("launchTemplate", {}).get("version")) == str(self.version):
                self.log.info("Node group %s already runs launch template version %s", nodegroup, self.version)
                return {"update_id": None, "version": str(self.version)}
        ti = context["ti"]
        token = client_token(ti, str(self.version))
        delay = self.poll_seconds
        launch_template = {"id": self.launch_template_id, "version": str(self.version)}
        try:
            update = self.hook.update_nodegroup_version(cluster, nodegroup, launch_template, force=self.force,
                                                        token=token)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            if attempt >= waiter_attempts(self.timeout_seconds, delay):
                raise NodegroupUpdateFailed(
                    f"Node group {nodegroup} stayed busy with another update for {self.timeout_seconds} s"
                ) from error
            self.log.info("Another update of %s is in progress; retrying with the same token in %s s",
                          nodegroup, delay)
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=delay)), method_name="execute",
                       kwargs={"attempt": attempt + 1})
        self.log.info("Update %s of %s to launch template version %s: %s", update["id"], nodegroup,
                      self.version, update["status"])
        self.defer_until(NodegroupUpdateTrigger, method_name="execute_complete", cluster=cluster,
                         nodegroup=nodegroup, update_id=update["id"], timeout_seconds=self.timeout_seconds,
                         poll_seconds=delay)
        return {}  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = validate_execute_complete_event(event)
        update = self.hook.describe_update(self.cluster_name, self.node_group_name, event["update_id"])
        if update["status"] != "Successful":
            errors = "; ".join(f"{e.get('errorCode')}: {e.get('errorMessage')}" for e in update.get("errors", []))
            raise NodegroupUpdateFailed(
                f"Update {update['id']} of node group {self.node_group_name} to launch template version "
                f"{self.version} ended {update['status']}: {errors or event.get('message', 'no error given')}"
            )
        return {"update_id": update["id"], "version": str(self.version)}
