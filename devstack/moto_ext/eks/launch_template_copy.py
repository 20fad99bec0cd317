"""EKS's own copy of a managed node group's launch template, which the group's instances launch from.

"Customize managed nodes with launch templates" (https://docs.aws.amazon.com/eks/latest/userguide/
launch-templates.html): EKS does not launch from the template it was given but from a copy it
makes in the account (a template named `eks-<uuid>`, with its own id and version numbers); each
update to another version of the source adds a version to the copy. So an instance's
`aws:ec2launchtemplate:id`/`version` tags name the copy, and only the Kubernetes node's labels
`eks.amazonaws.com/sourceLaunchTemplateId`/`sourceLaunchTemplateVersion` name the source.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

_lock = threading.Lock()


def copy_of(ec2: Any, nodegroup: Any, source_version: Any) -> Any:
    """The copy's version made from `source_version` (a moto LaunchTemplateVersion of the group's
    template): the copy is created on first use, a version is added per new source version."""
    key = f"{source_version.template.id}:{source_version.number}"
    with _lock:
        state = getattr(nodegroup, "devstack_launch_template_copy", None)
        if state is None or state["id"] not in ec2.launch_templates:
            template = ec2.create_launch_template(f"eks-{uuid.uuid4()}", "", dict(source_version.data), {})
            state = {"id": template.id, "versions": {key: 1}}
            nodegroup.devstack_launch_template_copy = state
        copy = ec2.launch_templates[state["id"]]
        if key not in state["versions"]:
            state["versions"][key] = copy.create_version(dict(source_version.data), "").number
        return copy.get_version(state["versions"][key])


def source_version(ec2: Any, template: dict[str, Any]) -> Any:
    """The moto LaunchTemplateVersion a node group's {id|name, version} names ($Default without one)."""
    arg = {"LaunchTemplateId": template["id"]} if template.get("id") else {"LaunchTemplateName": template["name"]}
    if template.get("version"):
        arg["Version"] = str(template["version"])
    return ec2._get_template_from_args(arg)


def copy_for(ec2: Any, nodegroup: Any, template: dict[str, Any] | None) -> Any:
    """The copy's version for the group's launch template {id|name, version}; None without one."""
    if not template or not (template.get("id") or template.get("name")):
        return None
    return copy_of(ec2, nodegroup, source_version(ec2, template))
