"""The instance_lost_mid_command fault: the instance stops or terminates while a command runs.

On AWS the invocation does not end when its instance goes away: the agent that would report it is
gone, so Run Command shows it `InProgress` (`Delayed` while a node is stopped) until its timeout
passes (https://docs.aws.amazon.com/systems-manager/latest/userguide/monitor-commands.html). Only
the instance's state and StateReason say what happened, so that is what a caller must watch.
"""

from __future__ import annotations

import logging
from typing import Any

from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from devstack import faults, process
from devstack.agent.models import Invocation

log = logging.getLogger(__name__)

LOST_AFTER_SECONDS = 1.0  # the command has started (InProgress) when its instance goes
LOST = "Lost"  # Invocation.stop_reason: the process dies with the instance, the invocation stays InProgress


def lose_instance(invocation: Invocation, how: str, grace_seconds: float) -> None:
    """Stop or terminate the invocation's instance the way EC2 would on its own, and kill the command."""
    with invocation.lock:
        if invocation.finished or invocation.stop_reason:
            return
        invocation.stop_reason = LOST
        child = invocation.process
    instance = _instance(invocation.instance_id)
    if instance is not None:
        if how == "terminated":
            instance.ec2_backend.terminate_instances([instance.id])  # the sandbox goes, as on termination
        else:
            instance.stop()
        code, message = faults.INSTANCE_LOSSES[how]
        instance.state_reason = StateReason(message, code)
        instance._reason = message
        log.info("devstack fault: %s %s mid-command (%s)", instance.id, how, code)
    if child is not None:
        process.stop(child, grace_seconds)


def _instance(instance_id: str) -> Any:
    """The moto instance, searched in the backends that exist (none is created by looking)."""
    for account in list(dict.keys(ec2_backends)):
        regions = dict.__getitem__(ec2_backends, account)
        for region in list(dict.keys(regions)):
            backend = dict.__getitem__(regions, region)
            for instance in backend.all_instances():
                if instance.id == instance_id:
                    return instance
    return None
