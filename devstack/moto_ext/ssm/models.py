"""SSM state of sandbox instances: agent registration, Command documents, the public EKS AMI parameters.

Invocations themselves are the local agent's (devstack.agent.models).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ssm.models import Parameter, ssm_backends

from devstack import clock, faults, sandbox
from devstack.agent.documents import BUILTIN_DOCUMENTS, parse_document
from devstack.moto_ext.ssm.exceptions import SsmError

AGENT_VERSION = "3.3.1142.0"
EKS_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34")
EKS_ARCHES = ("x86_64", "arm64")
EKS_FLAVORS = ("standard", "nvidia")
EKS_AMI_OWNER = "602401143452"


# --- agent registration -------------------------------------------------------------------

def ping_status(instance: Any, box: sandbox.Sandbox) -> str | None:
    """Online, ConnectionLost, or None while the agent has never registered."""
    now = clock.now()
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


def instances_with_sandboxes(account: str, region: str) -> list[tuple[Any, sandbox.Sandbox]]:
    backend = ec2_backends[account][region]
    found = []
    for instance in backend.all_instances():
        box = sandbox.get(instance.id)
        if box is not None:
            found.append((instance, box))
    return found


# --- Command documents ------------------------------------------------------------------------

def document_content(backend: Any, name: str, version: str | None) -> dict[str, Any]:
    if name in BUILTIN_DOCUMENTS:
        return BUILTIN_DOCUMENTS[name]
    documents = backend._documents.get(name)
    if documents is None:
        raise SsmError("InvalidDocument", f"Document {name} does not exist in your account.")
    document = documents.find(version if version and version != "$DEFAULT" else None, None, strict=False)
    if document is None:
        raise SsmError("InvalidDocumentVersion", f"Document {name} has no version {version}.")
    return parse_document(document.content)


def check_document_hash(backend: Any, name: str, version: str | None, expected: str | None,
                        hash_type: str | None) -> None:
    """SendCommand with DocumentHash runs only the document whose hash SSM computed at creation is that one
    (Sha256, or the deprecated Sha1): a document deleted and re-created under the same name and version
    with other content is refused. https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html
    (DocumentHash, DocumentHashType); the error is SendCommand's InvalidDocument."""
    if not expected:
        return
    documents = backend._documents.get(name)
    document = None if documents is None else documents.find(
        version if version and version != "$DEFAULT" else None, None, strict=False)
    if document is None:  # built-in documents: their hashes are AWS's, not reproducible here
        raise SsmError("InvalidDocument", f"Document {name} has no hash {expected} to check in this cloud.")
    algorithm = {"Sha256": hashlib.sha256, "Sha1": hashlib.sha1}[hash_type or "Sha256"]
    actual = algorithm(document.content.encode("utf-8")).hexdigest()
    if actual != expected:
        raise SsmError("InvalidDocument", f"Document {name} version {document.document_version} does not match "
                                          f"the {hash_type or 'Sha256'} hash {expected} (it is {actual}).")


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
                            last_modified_date=clock.time(), version=1, data_type="aws:ec2:image",
                        )])
        _amis_loaded.add((account, region))


def reset() -> None:
    with _ami_lock:
        _amis_loaded.clear()
