"""Move the GPU node group to a launch template version: the rollout and its rollback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from botocore.exceptions import ClientError

from ml_cache.hooks.eks import CacheEksHook
from ml_cache.operators.builder import trigger_connection, waiter_attempts
from ml_cache.tags import client_token
from ml_cache.triggers.eks import NodegroupUpdateTrigger


class NodegroupUpdateFailed(RuntimeError):
    """The node group update ended Failed or Cancelled, or never started."""


class UpdateNodegroupOperator(AwsBaseOperator[CacheEksHook]):
    """UpdateNodegroupVersion to `version` of our launch template, then defer until Successful.

    The clientRequestToken derives from dag/run/task/map index and the version, so a retried task
    joins its own update instead of starting another. An update already in progress
    (ResourceInUseException) means: wait, then retry with the same token. `force` only when asked.
    With `skip_if_current`, a node group already on `version` is left alone (nothing to roll back).
    """

    aws_hook_class = CacheEksHook
    template_fields: Sequence[str] = aws_template_fields("settings", "version")

    def __init__(self, *, settings: Any, version: Any, skip_if_current: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.version = version
        self.skip_if_current = skip_if_current

    def _launch_template(self) -> dict[str, str]:
        return {"id": self.settings["launch_template_id"], "version": str(self.version)}

    def execute(self, context: Any, event: dict[str, Any] | None = None, attempt: int = 0) -> dict[str, Any]:
        settings = self.settings
        if self.version in (None, "None", ""):
            raise AirflowSkipException("No launch template version to move to: the update never started")
        cluster, nodegroup = settings["cluster_name"], settings["node_group_name"]
        if self.skip_if_current:
            current = self.hook.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)["nodegroup"]
            if str(current.get("launchTemplate", {}).get("version")) == str(self.version):
                self.log.info("Node group %s already runs launch template version %s", nodegroup, self.version)
                return {"update_id": None, "version": str(self.version)}
        ti = context["ti"]
        token = client_token(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, str(self.version))
        delay = settings["poll_seconds"]
        try:
            update = self.hook.update_nodegroup_version(cluster, nodegroup, self._launch_template(),
                                                        force=settings["force_update"], token=token)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            if attempt >= waiter_attempts(settings["update_seconds"], delay):
                raise NodegroupUpdateFailed(
                    f"Node group {nodegroup} stayed busy with another update for {settings['update_seconds']} s"
                ) from error
            self.log.info("Another update of %s is in progress; retrying with the same token in %s s",
                          nodegroup, delay)
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=delay)), method_name="execute",
                       kwargs={"attempt": attempt + 1})
        self.log.info("Update %s of %s to launch template version %s: %s", update["id"], nodegroup,
                      self.version, update["status"])
        self.defer(
            trigger=NodegroupUpdateTrigger(
                cluster=cluster, nodegroup=nodegroup, update_id=update["id"], waiter_delay=delay,
                waiter_max_attempts=waiter_attempts(settings["update_seconds"], delay),
                **trigger_connection(self),
            ),
            method_name="execute_complete",
        )
        return {}  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = validate_execute_complete_event(event)
        settings = self.settings
        update = self.hook.describe_update(settings["cluster_name"], settings["node_group_name"], event["update_id"])
        if update["status"] != "Successful":
            errors = "; ".join(f"{e.get('errorCode')}: {e.get('errorMessage')}" for e in update.get("errors", []))
            raise NodegroupUpdateFailed(
                f"Update {update['id']} of node group {settings['node_group_name']} to launch template version "
                f"{self.version} ended {update['status']}: {errors or event.get('message', 'no error given')}"
            )
        return {"update_id": update["id"], "version": str(self.version)}
