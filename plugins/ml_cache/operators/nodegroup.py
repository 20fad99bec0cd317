"""Change the GPU node group and wait for EKS to finish: the rollout, the validation node, and their undoing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from botocore.exceptions import ClientError

from ml_cache.errors import DeadlinePassed, fail_fast
from ml_cache.hooks.eks import CacheEksHook
from ml_cache.links import NodegroupLink
from ml_cache.operators.base import CacheAwsOperator, waiter_attempts
from ml_cache.steps.rollout import rollout_published
from ml_cache.tags import client_token
from ml_cache.triggers.eks import NodegroupUpdateTrigger


class NodegroupUpdateFailed(RuntimeError):
    """The node group update ended Failed or Cancelled, or never started."""


class _NodegroupChangeOperator(CacheAwsOperator[CacheEksHook]):
    """Start one node group update (`_start`), then defer until it is Successful.

    The clientRequestToken derives from dag/run/task/map index and the change, so a retried task
    joins its own update instead of starting another. An update already in progress
    (ResourceInUseException) means: wait, then retry with the same token. A wait past
    `timeout_seconds` fails at once (DeadlinePassed: each deadline counts once in the run timeout).
    """

    aws_hook_class = CacheEksHook
    operator_extra_links = (NodegroupLink(),)

    def __init__(self, *, cluster_name: str, node_group_name: str, timeout_seconds: int, poll_seconds: int,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.node_group_name = node_group_name
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def _change(self, context: Any) -> str | None:
        """What the update changes (part of its token), or None: nothing to change."""
        raise NotImplementedError

    def _start(self, token: str) -> dict[str, Any]:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return self.hook.describe_nodegroup(clusterName=self.cluster_name,
                                            nodegroupName=self.node_group_name)["nodegroup"]

    def _update_status(self, update_id: str) -> str:
        return self.hook.describe_update(self.cluster_name, self.node_group_name, update_id)["status"]

    def execute(self, context: Any, event: dict[str, Any] | None = None, attempt: int = 0) -> dict[str, Any] | None:
        change = self._change(context)
        if change is None:
            return None
        self.persist_link(context, NodegroupLink, cluster_name=self.cluster_name, nodegroup_name=self.node_group_name)
        ti = context["ti"]
        token = client_token(ti, change)
        delay = self.poll_seconds
        try:
            with fail_fast():
                update = self._start(token)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            if attempt >= waiter_attempts(self.timeout_seconds, delay):
                raise DeadlinePassed(f"Node group {self.node_group_name} stayed busy with another update for "
                                     f"{self.timeout_seconds} s") from error
            self.log.info("Another update of %s is in progress; retrying with the same token in %s s",
                          self.node_group_name, delay)
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=delay)), method_name="execute",
                       kwargs={"attempt": attempt + 1})
        self.log.info("Update %s (%s) of %s to %s: %s", update["id"], update.get("type"), self.node_group_name,
                      change, update["status"])
        if self.holds_soon(lambda: self._update_status(update["id"]) != "InProgress", poll_seconds=delay,
                           timeout_seconds=self.timeout_seconds):
            return self.execute_complete(context, {"status": "success", "update_id": update["id"]})  # no #71580
        self.defer_until(NodegroupUpdateTrigger, method_name="execute_complete", cluster=self.cluster_name,
                         nodegroup=self.node_group_name, update_id=update["id"],
                         timeout_seconds=self.timeout_seconds, poll_seconds=delay)
        return None  # not reached: defer raises

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = validate_execute_complete_event(event)
        update = self.hook.describe_update(self.cluster_name, self.node_group_name, event["update_id"])
        if update["status"] == "InProgress":
            raise DeadlinePassed(f"Update {update['id']} of node group {self.node_group_name} was still "
                                 f"InProgress after {self.timeout_seconds} s")
        if update["status"] != "Successful":
            errors = "; ".join(f"{e.get('errorCode')}: {e.get('errorMessage')}" for e in update.get("errors", []))
            raise NodegroupUpdateFailed(
                f"Update {update['id']} of node group {self.node_group_name} ({update.get('type')}) ended "
                f"{update['status']}: {errors or event.get('message', 'no error given')}"
            )
        return {"update_id": update["id"]}


class UpdateNodegroupOperator(_NodegroupChangeOperator):
    """UpdateNodegroupVersion to `version` of our launch template. `force` only when asked.

    With `rollback`, it is the rollout's teardown: nothing to do once the rollout published (its
    `publish_ready` result exists) or when the node group runs `version` and no update is in progress.
    """

    template_fields: Sequence[str] = aws_template_fields(
        "cluster_name", "node_group_name", "launch_template_id", "version", "force", "timeout_seconds",
        "poll_seconds")

    def __init__(self, *, launch_template_id: str, version: str | None, force: bool, rollback: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch_template_id = launch_template_id
        self.version = version
        self.force = force
        self.rollback = rollback

    def _change(self, context: Any) -> str | None:
        if self.version in (None, "None", ""):
            raise AirflowSkipException("No launch template version to move to: the update never started")
        if self.rollback and rollout_published(context["ti"]):
            self.log.info("The rollout published: nothing to roll back")
            return None
        if self.rollback:
            nodegroup = self._describe()
            running = str(nodegroup.get("launchTemplate", {}).get("version"))
            # an update still in progress (ours, past its deadline) may move it yet: wait for it, then decide
            if nodegroup.get("status") != "UPDATING" and running == str(self.version):
                self.log.info("Node group %s runs launch template version %s", self.node_group_name, self.version)
                return None
        return f"launch template version {self.version}"

    def _start(self, token: str) -> dict[str, Any]:
        launch_template = {"id": self.launch_template_id, "version": str(self.version)}
        return self.hook.update_nodegroup_version(self.cluster_name, self.node_group_name, launch_template,
                                                  force=self.force, token=token)


class ScaleNodegroupOperator(_NodegroupChangeOperator):
    """UpdateNodegroupConfig to `scaling` ({minSize, maxSize, desiredSize}); nothing to do when it is
    None (no change wanted) or the node group already has it: the validation node's scale-up, and the
    teardown that puts the original scaling back whatever happened."""

    template_fields: Sequence[str] = aws_template_fields(
        "cluster_name", "node_group_name", "scaling", "timeout_seconds", "poll_seconds")

    def __init__(self, *, scaling: dict[str, int] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scaling = scaling

    def _change(self, context: Any) -> str | None:
        if not self.scaling:
            self.log.info("Node group %s keeps its scaling", self.node_group_name or "(none configured)")
            return None
        current = self._describe().get("scalingConfig") or {}
        if all(current.get(key) == value for key, value in self.scaling.items()):
            self.log.info("Node group %s already scales %s", self.node_group_name, current)
            return None
        return "scaling " + ", ".join(f"{key}={self.scaling[key]}" for key in sorted(self.scaling))

    def _start(self, token: str) -> dict[str, Any]:
        return self.hook.update_nodegroup_scaling(self.cluster_name, self.node_group_name, dict(self.scaling or {}),
                                                  token=token)
