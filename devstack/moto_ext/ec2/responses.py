"""EC2 request handlers the extension puts on moto's EC2Response: RunInstances idempotency and faults,
snapshots, FSR.

A capacity fault answers RunInstances with InsufficientInstanceCapacity (HTTP 500, EC2 XML error)
for the listed instance types, so the DAG's fallback to the next type is exercised; the
`run_instances_errors` fault answers the next calls with any EC2 error code. A repeated ClientToken
gets the earlier reservation (moto_ext.ec2.idempotency). FSR partial failures are `Unsuccessful`
entries in an HTTP 200 answer, as in AWS.
"""

from __future__ import annotations

import uuid
from typing import Any
from xml.sax.saxutils import escape

from moto.core.responses import ActionResult

from devstack import faults
from devstack.moto_ext.ec2 import fsr, idempotency, models

# HTTP status of the EC2 error codes that are server errors; every other code is a 400 client error
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
SERVER_ERROR_STATUS = {"InsufficientInstanceCapacity": 500, "InternalError": 500, "RequestLimitExceeded": 503,
                       "ServiceUnavailable": 503, "Unavailable": 503}


def ec2_error(code: str, message: str, status: int = 400) -> tuple[str, dict[str, Any]]:
    """An EC2 XML error answer."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code>"
        f"<Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    )
    return body, {"status": status, "Content-Type": "text/xml"}


def capacity_error(instance_type: str, zone: str | None) -> tuple[str, dict[str, Any]]:
    """The EC2 XML error body AWS sends for InsufficientInstanceCapacity."""
    where = f" in the Availability Zone you requested ({zone})" if zone else ""
    message = (
        f"We currently do not have sufficient {instance_type} capacity{where}. Our system will be "
        "working on provisioning additional capacity. You can currently get "
        f"{instance_type} capacity by not specifying an Availability Zone in your request or "
        "choosing a different Availability Zone."
    )
    return ec2_error("InsufficientInstanceCapacity", message, 500)


def too_small_for_snapshot(backend: Any, mappings: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """InvalidBlockDeviceMapping for a mapping whose VolumeSize is below its snapshot's size, checked
    before moto creates anything (AWS launches nothing then)."""
    for mapping in mappings or []:
        ebs = mapping.get("Ebs") or {}
        snapshot = backend.snapshots.get(ebs.get("SnapshotId"))
        if snapshot is not None and ebs.get("VolumeSize") and int(ebs["VolumeSize"]) < snapshot.volume.size:
            return ec2_error("InvalidBlockDeviceMapping", f"Volume of size {ebs['VolumeSize']}GB is smaller than "
                             f"snapshot '{snapshot.id}', expect size >= {snapshot.volume.size}GB")
    return None


def run_instances(original: Any) -> Any:
    def handler(self: Any) -> Any:
        token = self._get_param("ClientToken")
        if not token:
            return launch(self, original)
        request = idempotency.compared_request(self.querystring)
        with idempotency.lock():
            try:
                earlier = idempotency.earlier_launch(self.current_account, self.region, token, request)
            except idempotency.ParameterMismatch as mismatch:
                return ec2_error("IdempotentParameterMismatch", str(mismatch))
            if earlier is not None:
                return ActionResult(earlier)
            answer = launch(self, original)
            if isinstance(answer, ActionResult):
                idempotency.record(self.current_account, self.region, token, request, answer.result)
            return answer

    return handler


def launch(self: Any, original: Any) -> Any:
    """RunInstances unless a fault answers it, or a mapping is smaller than its snapshot."""
    injected = faults.pop_first("run_instances_errors")
    if injected:
        return ec2_error(injected, f"devstack fault: run_instances_errors ({injected})",
                         SERVER_ERROR_STATUS.get(injected, 400))
    instance_type = self._get_param("InstanceType")
    mappings = self._get_param("BlockDeviceMappings")
    if self._get_param("LaunchTemplate"):
        template = self.ec2_backend._get_template_from_args(self._get_param("LaunchTemplate"))
        instance_type = instance_type or (template.data.get("InstanceType") if template else None)
        mappings = mappings or (template.data.get("BlockDeviceMappings") if template else None)
    if instance_type and instance_type in faults.current().insufficient_capacity_instance_types:
        return capacity_error(instance_type, self._get_param("Placement.AvailabilityZone"))
    return too_small_for_snapshot(self.ec2_backend, mappings) or original(self)


def create_snapshot(original: Any) -> Any:
    def handler(self: Any) -> Any:
        result = original(self)
        as_created = models.start_snapshot_copy(result.result)
        return result if as_created is None else ActionResult(as_created)

    return handler


def delete_snapshot(original: Any) -> Any:
    def handler(self: Any) -> Any:
        snapshot_id = self._get_param("SnapshotId")
        result = original(self)
        models.delete_snapshot_file(self.current_account, self.region, snapshot_id)
        return result

    return handler


def _change_fsr(self: Any, change: Any) -> ActionResult:
    zones = self._get_param("AvailabilityZones", [])
    snapshot_ids = self._get_param("SourceSnapshotIds", [])
    self.error_on_dryrun()
    successful, unsuccessful = change(self.ec2_backend, self.current_account, self.region, snapshot_ids, zones)
    return ActionResult({"Successful": successful, "Unsuccessful": unsuccessful})


def enable_fast_snapshot_restores(self: Any) -> ActionResult:
    return _change_fsr(self, fsr.enable_fsr)


def disable_fast_snapshot_restores(self: Any) -> ActionResult:
    return _change_fsr(self, fsr.disable_fsr)


def describe_fast_snapshot_restores(self: Any) -> ActionResult:
    filters = {f["Name"]: set(f.get("Values", [])) for f in self._get_param("Filters", []) or []}
    return ActionResult({"FastSnapshotRestores": fsr.describe_fsr(self.current_account, self.region, filters)})
