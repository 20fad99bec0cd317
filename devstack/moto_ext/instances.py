"""RunInstances / TerminateInstances hooks: every instance gets a sandbox, terminate tears it down.

A capacity fault answers RunInstances with InsufficientInstanceCapacity (HTTP 500, EC2 XML error)
for the listed instance types, so the DAG's fallback to the next type is exercised.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from xml.sax.saxutils import escape

from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.instances import Instance, InstanceBackend
from moto.ec2.responses import EC2Response

from devstack import faults, sandbox
from devstack.agent import runner
from devstack.moto_ext import _patch

log = logging.getLogger(__name__)


def capacity_error(instance_type: str, zone: str | None) -> tuple[str, dict[str, Any]]:
    """The EC2 XML error body AWS sends for InsufficientInstanceCapacity."""
    where = f" in the Availability Zone you requested ({zone})" if zone else ""
    message = (
        f"We currently do not have sufficient {instance_type} capacity{where}. Our system will be "
        "working on provisioning additional capacity. You can currently get "
        f"{instance_type} capacity by not specifying an Availability Zone in your request or "
        "choosing a different Availability Zone."
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response><Errors><Error><Code>InsufficientInstanceCapacity</Code>"
        f"<Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    )
    return body, {"status": 500, "Content-Type": "text/xml"}


def run_instances_response(original: Any) -> Any:
    def handler(self: Any) -> Any:
        instance_type = self._get_param("InstanceType")
        if instance_type is None and self._get_param("LaunchTemplate"):
            template = self.ec2_backend._get_template_from_args(self._get_param("LaunchTemplate"))
            instance_type = template.data.get("InstanceType") if template else None
        if instance_type and instance_type in faults.current().insufficient_capacity_instance_types:
            return capacity_error(instance_type, self._get_param("Placement.AvailabilityZone"))
        return original(self)

    return handler


def run_instances_model(original: Any) -> Any:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = original(self, *args, **kwargs)
        for instance in reservation.instances:
            try:
                sandbox.create(instance.id, data_volumes(self, instance), region=self.region_name)
            except Exception:
                log.exception("sandbox for %s failed", instance.id)
                raise
        return reservation

    return run


AMAZON_LINUX_ROOT_DEVICE = "/dev/xvda"


def data_volumes(backend: Any, instance: Instance) -> list[dict[str, object]]:
    """Non-root EBS volumes of the instance, as sandbox.create wants them.

    /dev/xvda is the root device of the Amazon Linux AMIs our templates use, also when moto
    launched the instance from one of its own images (root /dev/sda1): on AWS it holds `/`,
    so a node's mount script must never see it as a candidate cache volume.
    """
    found = []
    for device_name, mapping in instance.get_block_device_mapping:
        if device_name in (instance.root_device_name, AMAZON_LINUX_ROOT_DEVICE) or not mapping.volume_id:
            continue
        volume = backend.get_volume(mapping.volume_id)
        found.append({
            "volume_id": volume.id,
            "device_name": device_name,
            "size_gib": volume.size,
            "delete_on_termination": bool(mapping.delete_on_termination),
            "snapshot_id": volume.snapshot_id,
        })
    return found


def terminate(original: Any) -> Any:
    def terminate_instance(self: Instance) -> Any:
        if self.state != "terminated":
            runner.terminate_instance(self.id)
            sandbox.teardown(self.id)
        return original(self)

    return terminate_instance


def attach_volume(original: Any) -> Any:
    def attach(self: Any, volume_id: str, instance_id: str, device_path: str,
               delete_on_termination: bool = False) -> Any:
        attachment = original(self, volume_id, instance_id, device_path, delete_on_termination)
        instance = self.get_instance(instance_id)
        if attachment is not None and device_path != instance.root_device_name:
            volume = self.get_volume(volume_id)
            sandbox.attach_volume(instance_id, {
                "volume_id": volume_id, "device_name": device_path, "size_gib": volume.size,
                "delete_on_termination": bool(delete_on_termination), "snapshot_id": volume.snapshot_id,
            })
        return attachment

    return attach


def detach_volume(original: Any) -> Any:
    def detach(self: Any, volume_id: str, instance_id: str, device_path: str) -> Any:
        sandbox.detach_volume(instance_id, volume_id)
        return original(self, volume_id, instance_id, device_path)

    return detach


def install() -> None:
    _patch.replace(EBSBackend, "attach_volume", attach_volume)
    _patch.replace(EBSBackend, "detach_volume", detach_volume)
    _patch.replace(EC2Response, "run_instances", run_instances_response)
    _patch.replace(InstanceBackend, "run_instances", run_instances_model)
    _patch.replace(Instance, "terminate", terminate)
