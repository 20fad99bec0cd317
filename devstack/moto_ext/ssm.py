"""SSM for sandbox instances: agent registration, Run Command that really runs, EKS AMI parameters.

moto's SendCommand reports `Success` at once and runs nothing; here SendCommand hands the
document to the local agent (devstack.agent) and the invocation APIs report the agent's state.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ssm.models import Command, Parameter, ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from devstack import agent, faults, sandbox
from devstack.moto_ext import _patch

AGENT_VERSION = "3.3.1142.0"
EKS_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34")
EKS_ARCHES = ("x86_64", "arm64")
EKS_FLAVORS = ("standard", "nvidia")
EKS_AMI_OWNER = "602401143452"
EKS_AMI_PARAMETER = re.compile(
    r"^/aws/service/eks/optimized-ami/(?P<version>\d+\.\d+)/amazon-linux-2023/"
    r"(?P<arch>x86_64|arm64)/(?P<flavor>standard|nvidia)/recommended/image_id$"
)


class SsmError(ServiceException):
    pass


# --- agent registration -------------------------------------------------------------------

def ping_status(instance: Any, box: sandbox.Sandbox) -> str | None:
    """Online, ConnectionLost, or None while the agent has never registered."""
    now = datetime.now(UTC)
    online = (
        instance.state == "running"
        and not box.terminated
        and not faults.current().agent_offline
        and time.monotonic() - box.created_monotonic >= faults.delay("agent_online_seconds")
    )
    if online:
        box.agent_registered = True
        box.last_ping = now
        return "Online"
    return "ConnectionLost" if box.agent_registered else None


def _instances_with_sandboxes(account: str, region: str) -> list[tuple[Any, sandbox.Sandbox]]:
    backend = ec2_backends[account][region]
    found = []
    for instance in backend.all_instances():
        box = sandbox.get(instance.id)
        if box is not None:
            found.append((instance, box))
    return found


def describe_instance_information(self: Any) -> ActionResult:
    wanted: dict[str, set[str]] = {}
    for item in self._get_param("Filters", []) or []:
        wanted.setdefault(item["Key"].lower(), set()).update(item.get("Values", []))
    for item in self._get_param("InstanceInformationFilterList", []) or []:
        wanted.setdefault(item["key"].lower(), set()).update(item.get("valueSet", []))
    items = []
    for instance, box in _instances_with_sandboxes(self.current_account, self.region):
        status = ping_status(instance, box)
        if status is None:
            continue
        info = {
            "InstanceId": instance.id,
            "PingStatus": status,
            "LastPingDateTime": box.last_ping,
            "AgentVersion": AGENT_VERSION,
            "IsLatestVersion": True,
            "PlatformType": "Linux",
            "PlatformName": "Amazon Linux",
            "PlatformVersion": "2023",
            "ResourceType": "EC2Instance",
            "IPAddress": instance.private_ip,
            "ComputerName": f"ip-{str(instance.private_ip).replace('.', '-')}.{self.region}.compute.internal",
        }
        checks = {"instanceids": instance.id, "pingstatus": status, "platformtypes": "Linux",
                  "resourcetype": "EC2Instance", "agentversion": AGENT_VERSION}
        if all(checks.get(key) in values for key, values in wanted.items() if key in checks):
            items.append(info)
    return ActionResult({"InstanceInformationList": items})


# --- Run Command ----------------------------------------------------------------------------

def _document_content(backend: Any, name: str, version: str | None) -> dict[str, Any]:
    if name in agent.BUILTIN_DOCUMENTS:
        return agent.BUILTIN_DOCUMENTS[name]
    documents = backend._documents.get(name)
    if documents is None:
        raise SsmError("InvalidDocument", f"Document {name} does not exist in your account.")
    document = documents.find(version if version and version != "$DEFAULT" else None, None, strict=False)
    if document is None:
        raise SsmError("InvalidDocumentVersion", f"Document {name} has no version {version}.")
    return agent.parse_document(document.content)


def send_command(original: Any) -> Any:
    def handler(self: Any) -> ActionResult:
        document_name = self._get_param("DocumentName")
        parameters = self._get_param("Parameters", {}) or {}
        content = _document_content(self.ssm_backend, document_name, self._get_param("DocumentVersion"))
        try:
            agent.plan(document_name, content, parameters, Path("/nonexistent"))
        except agent.InvalidParameters as error:
            raise SsmError("InvalidParameters", str(error)) from error
        except agent.InvalidDocument as error:
            raise SsmError("InvalidDocument", str(error)) from error
        boxes = {i.id: (i, b) for i, b in _instances_with_sandboxes(self.current_account, self.region)}
        explicit = self._get_param("InstanceIds", []) or []
        not_online = [iid for iid in explicit if iid not in boxes or ping_status(*boxes[iid]) != "Online"]
        if not_online:
            raise SsmError("InvalidInstanceId",
                           f"Instances {not_online} not in a valid state for account {self.current_account}")
        result = original(self)
        command = self.ssm_backend.get_command_by_id(result.result["Command"]["CommandId"])
        for instance_id in list(command.instance_ids):
            if instance_id in boxes and ping_status(*boxes[instance_id]) == "Online":
                agent.start(command.command_id, boxes[instance_id][1], document_name, content, parameters,
                            comment=command.comment)
        return ActionResult({"Command": command.response_object()})

    return handler


def command_response_object(original: Any) -> Any:
    def response_object(self: Command) -> dict[str, Any]:
        result = original(self)
        status = agent.command_status(self.command_id)
        if status is not None:
            invocations = agent.for_command(self.command_id)
            result["Status"] = result["StatusDetails"] = status
            result["CompletedCount"] = sum(1 for inv in invocations if inv.finished)
            result["ErrorCount"] = sum(1 for inv in invocations if inv.finished and inv.status != "Success")
            result["TargetCount"] = len(invocations)
        return result

    return response_object


def _invocation_or_error(command_id: str, instance_id: str) -> agent.Invocation:
    invocation = agent.get(command_id, instance_id)
    if invocation is None or not invocation.visible:
        raise SsmError("InvocationDoesNotExist",
                       "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation")
    return invocation


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if moment else ""


def _elapsed(plugin: agent.PluginRun) -> str:
    if plugin.started is None:
        return ""
    end = plugin.finished or datetime.now(UTC)
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
        "StandardOutputContent": plugin.output(agent.STDOUT_LIMIT),
        "StandardOutputUrl": "",
        "StandardErrorContent": plugin.errors(agent.STDERR_LIMIT),
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
    })


def _plugin_output(plugin: agent.PluginRun) -> str:
    """Plugin Output as AWS shows it: stdout, then stderr after a marker, cut at 2,500 chars."""
    output = plugin.output(agent.PLUGIN_OUTPUT_LIMIT)
    errors = plugin.errors(agent.PLUGIN_OUTPUT_LIMIT)
    if errors:
        output += "\n----------ERROR-------\n" + errors
    return output[: agent.PLUGIN_OUTPUT_LIMIT]


def list_command_invocations(self: Any) -> ActionResult:
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = bool(self._get_param("Details", False))
    filters = {f["key"]: f["value"] for f in self._get_param("Filters", []) or []}
    commands = {c.command_id: c for c in list(self.ssm_backend._commands)}
    if command_id and command_id not in commands:
        raise SsmError("InvalidCommandId", f"Command {command_id} does not exist.")
    invocations = agent.for_command(command_id) if command_id else [
        inv for cid in commands for inv in agent.for_command(cid)
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
            "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
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
    agent.cancel(command_id, self._get_param("InstanceIds", []) or None)
    return ActionResult({})


# --- public EKS AMI parameters --------------------------------------------------------------

_ami_lock = threading.Lock()
_amis_loaded: set[tuple[str, str]] = set()


def eks_ami_id(version: str, arch: str, flavor: str) -> str:
    """A stable fake AMI id per (Kubernetes version, architecture, flavor)."""
    return "ami-" + hashlib.sha256(f"eks-al2023/{version}/{arch}/{flavor}".encode()).hexdigest()[:17]


def ensure_eks_amis(account: str, region: str) -> None:
    """Register the EKS-optimized AL2023 AMIs and their public SSM parameters (once per region)."""
    with _ami_lock:
        if (account, region) in _amis_loaded:
            return
        ec2 = ec2_backends[account][region]
        parameters = ssm_backends[account][region]._parameters
        for version in EKS_VERSIONS:
            for arch in EKS_ARCHES:
                for flavor in EKS_FLAVORS:
                    ami_id = eks_ami_id(version, arch, flavor)
                    if ami_id not in ec2.amis:
                        ec2.amis[ami_id] = Ami(
                            ec2, ami_id, name=f"amazon-eks-node-al2023-{arch}-{flavor}-{version}-v20261101",
                            description=f"EKS-optimized Kubernetes node based on Amazon Linux 2023 ({flavor})",
                            owner_id=EKS_AMI_OWNER, owner_alias="amazon", public=True,
                            virtualization_type="hvm", architecture=arch, root_device_type="ebs",
                            root_device_name="/dev/xvda", region_name=f"{region}a", hypervisor="xen",
                            boot_mode="uefi-preferred",
                        )
                    name = (f"/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/{arch}/{flavor}"
                            "/recommended/image_id")
                    if not dict.get(parameters, name):
                        dict.__setitem__(parameters, name, [Parameter(
                            account_id=account, name=name, value=ami_id, parameter_type="String",
                            description=None, allowed_pattern=None, keyid=None,
                            last_modified_date=time.time(), version=1, data_type="aws:ec2:image",
                        )])
        _amis_loaded.add((account, region))


def with_eks_amis(original: Any) -> Any:
    def handler(self: Any) -> Any:
        names = [self._get_param("Name"), self._get_param("Path"), *(self._get_param("Names", []) or [])]
        if any(str(n or "").startswith("/aws/service/eks/") for n in names):
            ensure_eks_amis(self.current_account, self.region)
        return original(self)

    return handler


def reset() -> None:
    with _ami_lock:
        _amis_loaded.clear()


def install() -> None:
    _patch.replace(SimpleSystemManagerResponse, "describe_instance_information",
                   lambda _orig: describe_instance_information)
    _patch.replace(SimpleSystemManagerResponse, "send_command", send_command)
    _patch.replace(SimpleSystemManagerResponse, "get_command_invocation", lambda _orig: get_command_invocation)
    _patch.replace(SimpleSystemManagerResponse, "list_command_invocations",
                   lambda _orig: list_command_invocations)
    _patch.replace(SimpleSystemManagerResponse, "cancel_command", lambda _orig: cancel_command)
    _patch.replace(Command, "response_object", command_response_object)
    for name in ("get_parameter", "get_parameters", "get_parameters_by_path"):
        _patch.replace(SimpleSystemManagerResponse, name, with_eks_amis)
