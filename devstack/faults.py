"""Process-wide fault settings of the local cloud.

Tests and the fault catalog switch failures on over HTTP (`POST /_devstack/faults` with a JSON
object of the keys below; `DELETE` resets, `GET` shows) instead of patching code, so the DAG sees
the same errors it would get from AWS. Settings stay until changed or reset.

  insufficient_capacity_instance_types  RunInstances of these types: InsufficientInstanceCapacity (500)
  run_instances_errors                   the next RunInstances calls answer these EC2 error codes, one
                                         each (e.g. ["UnauthorizedOperation"]; 5xx for server codes)
  agent_offline                          no SSM agent registers (DescribeInstanceInformation omits the
                                         instance, SendCommand: InvalidInstanceId); registered ones
                                         turn ConnectionLost
  snapshot_error                         CreateSnapshot of sandbox volumes ends in state `error`
  instance_lost_mid_command              "stopped" or "terminated": a second after a command starts, its
                                         instance stops or terminates (StateReason as EC2 reports it; a
                                         command that ended sooner is not reported before the loss);
                                         its invocation stays InProgress, as on AWS (devstack.agent.loss)
  fsr_unsuccessful_azs                   EnableFastSnapshotRestores: Unsuccessful entries for these AZs
  ssm_command_status                     new commands run nothing and end with this status
                                         (Failed, TimedOut, DeliveryTimedOut, Cancelled, Undeliverable,
                                         Terminated, InvalidPlatform, AccessDenied)
  nodegroup_update_failed                EKS node group updates end Failed with this error code
  registry_429_manifests                 the registry fronts (devstack.registries) answer the next N
                                         manifest requests 429 Too Many Requests with Retry-After
  registry_retry_after_seconds           that Retry-After (default 1)
  ecr_token_seconds                      lifetime of ECR tokens issued from now on (default 12 h)
  *_seconds                              delays (fsr_enabling, fsr_optimizing, fsr_disabling,
                                         agent_online, invocation_absent, snapshot, nodegroup_update,
                                         registry_retry_after, ecr_token);
                                         null = env DEVSTACK_<NAME> or the short default
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# ssm_command_status value -> (invocation Status, StatusDetails) as GetCommandInvocation reports it;
# Status stays within CommandInvocationStatus, so botocore's command_executed waiter ends on it.
SSM_FAULT_STATUSES = {
    "Failed": ("Failed", "Failed"),
    "TimedOut": ("TimedOut", "ExecutionTimedOut"),
    "DeliveryTimedOut": ("TimedOut", "DeliveryTimedOut"),
    "Cancelled": ("Cancelled", "Cancelled"),
    "Undeliverable": ("Failed", "Undeliverable"),
    "Terminated": ("Failed", "Terminated"),
    "InvalidPlatform": ("Failed", "InvalidPlatform"),
    "AccessDenied": ("Failed", "AccessDenied"),
}

# instance_lost_mid_command value -> the instance's StateReason (code, message) as EC2 reports it:
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html
INSTANCE_LOSSES = {
    "stopped": ("Server.ScheduledStop", "Server.ScheduledStop: Stopped due to scheduled retirement"),
    "terminated": ("Client.InstanceInitiatedShutdown", "Client.InstanceInitiatedShutdown: Instance initiated shutdown"),
}


@dataclass
class Faults:
    """Current fault settings. `None` delays mean: use the env var or the default."""

    insufficient_capacity_instance_types: list[str] = field(default_factory=list)
    run_instances_errors: list[str] = field(default_factory=list)
    agent_offline: bool = False
    snapshot_error: bool = False
    instance_lost_mid_command: str | None = None
    fsr_unsuccessful_azs: list[str] = field(default_factory=list)
    fsr_enabling_seconds: float | None = None
    fsr_optimizing_seconds: float | None = None
    fsr_disabling_seconds: float | None = None
    agent_online_seconds: float | None = None
    invocation_absent_seconds: float | None = None
    ssm_command_status: str | None = None
    snapshot_seconds: float | None = None
    nodegroup_update_seconds: float | None = None
    nodegroup_update_failed: str | None = None
    registry_429_manifests: int = 0
    registry_retry_after_seconds: float | None = None
    ecr_token_seconds: float | None = None


_lock = threading.Lock()
_current = Faults()

_ENV_DEFAULTS = {
    "fsr_enabling_seconds": ("DEVSTACK_FSR_ENABLING_SECONDS", 1.0),
    "fsr_optimizing_seconds": ("DEVSTACK_FSR_OPTIMIZING_SECONDS", 1.0),
    "fsr_disabling_seconds": ("DEVSTACK_FSR_DISABLING_SECONDS", 1.0),
    "agent_online_seconds": ("DEVSTACK_AGENT_ONLINE_SECONDS", 1.0),
    "invocation_absent_seconds": ("DEVSTACK_INVOCATION_ABSENT_SECONDS", 0.3),
    "snapshot_seconds": ("DEVSTACK_SNAPSHOT_SECONDS", 0.5),
    "nodegroup_update_seconds": ("DEVSTACK_NODEGROUP_UPDATE_SECONDS", 2.0),
    "registry_retry_after_seconds": ("DEVSTACK_REGISTRY_RETRY_AFTER_SECONDS", 1.0),
    # https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html: 12 hours
    "ecr_token_seconds": ("DEVSTACK_ECR_TOKEN_SECONDS", 12 * 3600.0),
}


def current() -> Faults:
    """A copy of the settings, safe to read without the lock."""
    with _lock:
        return Faults(**asdict(_current))


def as_dict() -> dict[str, Any]:
    return asdict(current())


def update(changes: dict[str, Any]) -> dict[str, Any]:
    """Apply a partial update; unknown keys or wrong types raise ValueError (HTTP 400)."""
    known = {f.name for f in fields(Faults)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
    validated = {key: _validate(key, value) for key, value in changes.items()}
    with _lock:
        for key, value in validated.items():
            setattr(_current, key, value)
    return as_dict()


def reset() -> dict[str, Any]:
    global _current
    with _lock:
        _current = Faults()
    return as_dict()


def take_one(name: str) -> bool:
    """Use up one of a counted fault (e.g. registry_429_manifests): True while any was left."""
    with _lock:
        left = getattr(_current, name)
        if left <= 0:
            return False
        setattr(_current, name, left - 1)
        return True


def pop_first(name: str) -> str | None:
    """Use up the first entry of a list fault (e.g. run_instances_errors); None when it is empty."""
    with _lock:
        left = getattr(_current, name)
        return left.pop(0) if left else None


def delay(name: str) -> float:
    """A delay in seconds: the fault setting, else its env var, else the short default."""
    env_name, default = _ENV_DEFAULTS[name]
    value = getattr(current(), name)
    if value is not None:
        return float(value)
    raw = os.environ.get(env_name)
    return float(raw) if raw else default


def _validate(key: str, value: Any) -> Any:
    if key in ("insufficient_capacity_instance_types", "fsr_unsuccessful_azs", "run_instances_errors"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} must be a list of strings")
        return list(value)
    if key in ("agent_offline", "snapshot_error"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if key == "instance_lost_mid_command":
        if value not in (None, *INSTANCE_LOSSES):
            raise ValueError(f"instance_lost_mid_command must be one of {list(INSTANCE_LOSSES)} or null")
        return value
    if key == "ssm_command_status":
        if value is not None and value not in SSM_FAULT_STATUSES:
            raise ValueError(f"ssm_command_status must be one of {sorted(SSM_FAULT_STATUSES)} or null")
        return value
    if key == "nodegroup_update_failed":
        if value is not None and not isinstance(value, str):
            raise ValueError("nodegroup_update_failed must be an error code such as NodeCreationFailure")
        return value
    if key == "registry_429_manifests":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative number of requests")
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number of seconds")
    return float(value)
