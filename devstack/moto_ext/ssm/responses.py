"""SSM request handlers on moto's SimpleSystemManagerResponse: agent registration, Run Command
that really runs (moto's reports `Success` at once and runs nothing), the EKS AMI parameters."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from moto.core.responses import ActionResult
from moto.ssm.models import Command

from devstack import clock
from devstack.agent import documents, runner
from devstack.agent import models as agent_state
from devstack.agent.cloudwatch import CloudWatchOutput
from devstack.agent.models import Invocation, PluginRun
from devstack.moto_ext.ssm import models
from devstack.moto_ext.ssm.exceptions import SsmError


def describe_instance_information(self: Any) -> ActionResult:
    wanted: dict[str, set[str]] = {}
    for item in self._get_param("Filters", []) or []:
        wanted.setdefault(item["Key"].lower(), set()).update(item.get("Values", []))
    for item in self._get_param("InstanceInformationFilterList", []) or []:
        wanted.setdefault(item["key"].lower(), set()).update(item.get("valueSet", []))
    items = []
    for instance, box in models.instances_with_sandboxes(self.current_account, self.region):
        status = models.ping_status(instance, box)
        if status is None:
            continue
        info = {
            "InstanceId": instance.id,
            "PingStatus": status,
            "LastPingDateTime": box.last_ping,
            "AgentVersion": models.AGENT_VERSION,
            "IsLatestVersion": True,
            "PlatformType": "Linux",
            "PlatformName": "Amazon Linux",
            "PlatformVersion": "2023",
            "ResourceType": "EC2Instance",
            "IPAddress": instance.private_ip,
            "ComputerName": f"ip-{str(instance.private_ip).replace('.', '-')}.{self.region}.compute.internal",
        }
        checks = {"instanceids": instance.id, "pingstatus": status, "platformtypes": "Linux",
                  "resourcetype": "EC2Instance", "agentversion": models.AGENT_VERSION}
        if all(checks.get(key) in values for key, values in wanted.items() if key in checks):
            items.append(info)
    return ActionResult({"InstanceInformationList": items})


def send_command(original: Any) -> Any:
    def handler(self: Any) -> ActionResult:
        document_name = self._get_param("DocumentName")
        parameters = self._get_param("Parameters", {}) or {}
        content = models.document_content(self.ssm_backend, document_name, self._get_param("DocumentVersion"))
        models.check_document_hash(self.ssm_backend, document_name, self._get_param("DocumentVersion"),
                                   self._get_param("DocumentHash"), self._get_param("DocumentHashType"))
        try:
            documents.plan(document_name, content, parameters, Path("/nonexistent"))
        except documents.InvalidParameters as error:
            raise SsmError("InvalidParameters", str(error)) from error
        except documents.InvalidDocument as error:
            raise SsmError("InvalidDocument", str(error)) from error
        boxes = {i.id: (i, b) for i, b in models.instances_with_sandboxes(self.current_account, self.region)}
        explicit = self._get_param("InstanceIds", []) or []
        not_online = [iid for iid in explicit if iid not in boxes or models.ping_status(*boxes[iid]) != "Online"]
        if not_online:
            raise SsmError("InvalidInstanceId",
                           f"Instances {not_online} not in a valid state for account {self.current_account}")
        cloudwatch = CloudWatchOutput.from_request(self._get_param("CloudWatchOutputConfig"), self.current_account,
                                                   self.region, document_name)
        result = original(self)
        command = self.ssm_backend.get_command_by_id(result.result["Command"]["CommandId"])
        for instance_id in list(command.instance_ids):
            if instance_id in boxes and models.ping_status(*boxes[instance_id]) == "Online":
                runner.start(command.command_id, boxes[instance_id][1], document_name, content, parameters,
                             comment=command.comment, cloudwatch=cloudwatch)
        return ActionResult({"Command": command.response_object()})

    return handler


def command_response_object(original: Any) -> Any:
    def response_object(self: Command) -> dict[str, Any]:
        result = original(self)
        status = agent_state.command_status(self.command_id)
        if status is not None:
            invocations = agent_state.for_command(self.command_id)
            result["Status"] = result["StatusDetails"] = status
            result["CompletedCount"] = sum(1 for inv in invocations if inv.finished)
            result["ErrorCount"] = sum(1 for inv in invocations if inv.finished and inv.status != "Success")
            result["TargetCount"] = len(invocations)
            result["CloudWatchOutputConfig"] = _cloudwatch(invocations[0])  # moto keeps none
        return result

    return response_object


def _invocation_or_error(command_id: str, instance_id: str) -> Invocation:
    invocation = agent_state.get(command_id, instance_id)
    if invocation is None or not invocation.visible:
        raise SsmError("InvocationDoesNotExist",
                       "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation")
    return invocation


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if moment else ""


def _elapsed(plugin: PluginRun) -> str:
    if plugin.started is None:
        return ""
    end = plugin.finished or clock.now()
    return f"PT{(end - plugin.started).total_seconds():.3f}S"


def get_command_invocation(self: Any) -> ActionResult:
    invocation = _invocation_or_error(self._get_param("CommandId"), self._get_param("InstanceId"))
    plugin_name = self._get_param("PluginName")
    if plugin_name:
        plugin = next((p for p in invocation.plugins if p.name == plugin_name), None)
        if plugin is None:
            raise SsmError("InvalidPluginName", f"The plugin name {plugin_name} is not valid.")
        status, details = plugin.status, plugin.status_details
    else:
        plugin = invocation.current_plugin()
        status, details = invocation.status, invocation.status_details
    return ActionResult({
        "CommandId": invocation.command_id,
        "InstanceId": invocation.instance_id,
        "Comment": invocation.comment,
        "DocumentName": invocation.document_name,
        "DocumentVersion": "1",
        "PluginName": plugin.name,
        "ResponseCode": plugin.response_code,
        "ExecutionStartDateTime": _iso(plugin.started),
        "ExecutionElapsedTime": _elapsed(plugin),
        "ExecutionEndDateTime": _iso(plugin.finished),
        "Status": status,
        "StatusDetails": details,
        "StandardOutputContent": plugin.output(agent_state.STDOUT_LIMIT),
        "StandardOutputUrl": "",
        "StandardErrorContent": plugin.errors(agent_state.STDERR_LIMIT),
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": _cloudwatch(invocation),
    })


def _cloudwatch(invocation: Invocation) -> dict[str, Any]:
    if invocation.cloudwatch is None:
        return {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}
    return invocation.cloudwatch.as_response()


def _plugin_output(plugin: PluginRun) -> str:
    """Plugin Output as AWS shows it: stdout, then stderr after a marker, cut at 2,500 chars."""
    output = plugin.output(agent_state.PLUGIN_OUTPUT_LIMIT)
    errors = plugin.errors(agent_state.PLUGIN_OUTPUT_LIMIT)
    if errors:
        output += "\n----------ERROR-------\n" + errors
    return output[: agent_state.PLUGIN_OUTPUT_LIMIT]


def list_command_invocations(self: Any) -> ActionResult:
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = bool(self._get_param("Details", False))
    filters = {f["key"]: f["value"] for f in self._get_param("Filters", []) or []}
    commands = {c.command_id: c for c in list(self.ssm_backend._commands)}
    if command_id and command_id not in commands:
        raise SsmError("InvalidCommandId", f"Command {command_id} does not exist.")
    invocations = agent_state.for_command(command_id) if command_id else [
        inv for cid in commands for inv in agent_state.for_command(cid)
    ]
    items = []
    for invocation in invocations:
        if not invocation.visible or (instance_id and invocation.instance_id != instance_id):
            continue
        if filters.get("Status") and invocation.status != filters["Status"]:
            continue
        item: dict[str, Any] = {
            "CommandId": invocation.command_id,
            "InstanceId": invocation.instance_id,
            "InstanceName": "",
            "Comment": invocation.comment,
            "DocumentName": invocation.document_name,
            "DocumentVersion": "1",
            "RequestedDateTime": invocation.requested,
            "Status": invocation.status,
            "StatusDetails": invocation.status_details,
            "TraceOutput": "",
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
            "CommandPlugins": [],
            "ServiceRole": "",
            "CloudWatchOutputConfig": _cloudwatch(invocation),
        }
        if details:
            item["CommandPlugins"] = [
                {
                    "Name": plugin.name,
                    "Status": plugin.status,
                    "StatusDetails": plugin.status_details,
                    "ResponseCode": plugin.response_code,
                    **({"ResponseStartDateTime": plugin.started} if plugin.started else {}),
                    **({"ResponseFinishDateTime": plugin.finished} if plugin.finished else {}),
                    "Output": _plugin_output(plugin),
                    "StandardOutputUrl": "",
                    "StandardErrorUrl": "",
                    "OutputS3Region": self.region,
                    "OutputS3BucketName": "",
                    "OutputS3KeyPrefix": "",
                }
                for plugin in invocation.plugins
            ]
        items.append(item)
    return ActionResult({"CommandInvocations": items})


def cancel_command(self: Any) -> ActionResult:
    command_id = self._get_param("CommandId")
    self.ssm_backend.get_command_by_id(command_id)  # InvalidCommandId for unknown ids
    runner.cancel(command_id, self._get_param("InstanceIds", []) or None)
    return ActionResult({})


def with_eks_amis(original: Any) -> Any:
    def handler(self: Any) -> Any:
        names = [self._get_param("Name"), self._get_param("Path"), *(self._get_param("Names", []) or [])]
        if any(str(n or "").startswith("/aws/service/eks/") for n in names):
            models.ensure_eks_amis(self.current_account, self.region)
        return original(self)

    return handler


def list_document_versions(self: Any) -> ActionResult:
    """ListDocumentVersions (moto lacks it): every version of a document, InvalidDocument when absent."""
    documents = self.ssm_backend._get_documents(self._get_param("Name"))
    items = [{"Name": doc.name, "DocumentVersion": doc.document_version, "CreatedDate": doc.created_date,
              "IsDefaultVersion": version == documents.default_version, "DocumentFormat": doc.document_format,
              "Status": doc.status} for version, doc in documents.versions.items()]
    return ActionResult({"DocumentVersions": items})
