"""RunInstances ClientToken as EC2 honours it (moto launches a new instance for every call).

https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html: a request retried with the
same client token and the same parameters succeeds without performing any further action (the same
reservation; only information such as the instance state may have changed); the same token with one
or more other parameters (other than the Region or Availability Zone) fails with
IdempotentParameterMismatch; for RunInstances the token stays valid for at least 24 hours after the
instance terminates. Tokens are per account and Region; time is the local cloud's clock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devstack import clock

VALID_AFTER_TERMINATION = timedelta(hours=24)
MISMATCH_MESSAGE = "Arguments on this idempotent request are inconsistent with arguments used in previous request(s)."

# Query parameters that do not make a request different: the token itself, the protocol's own, and
# the Availability Zone, which the idempotency rule leaves out.
_NOT_COMPARED = {"Action", "Version", "ClientToken", "Placement.AvailabilityZone"}


@dataclass
class Launch:
    request: str  # the compared parameters, canonical JSON
    reservation: Any  # moto's Reservation: its instances answer with their current state


_lock = threading.RLock()
_launches: dict[tuple[str, str, str], Launch] = {}


class ParameterMismatch(Exception):
    """The token was used with other parameters."""


def compared_request(querystring: dict[str, Any]) -> str:
    """The parameters that must match for a repeated token, in a canonical form."""
    return json.dumps({key: value for key, value in querystring.items() if key not in _NOT_COMPARED}, sort_keys=True)


def lock() -> threading.RLock:
    """Held from lookup to record, so two requests with one token launch once."""
    return _lock


def earlier_launch(account: str, region: str, token: str, request: str) -> Any | None:
    """The reservation an earlier request with `token` launched, while the token is valid; None when there is
    none. Raises ParameterMismatch for the same token with other parameters."""
    launch = _launches.get((account, region, token))
    if launch is None:
        return None
    if _expired(launch.reservation, clock.now()):
        del _launches[(account, region, token)]
        return None
    if launch.request != request:
        raise ParameterMismatch(MISMATCH_MESSAGE)
    return launch.reservation


def record(account: str, region: str, token: str, request: str, reservation: Any) -> None:
    _launches[(account, region, token)] = Launch(request, reservation)


def _expired(reservation: Any, now: datetime) -> bool:
    """Every instance terminated more than 24 hours ago (devstack_terminated_at: moto_ext.ec2.models)."""
    ended = [getattr(instance, "devstack_terminated_at", None) for instance in reservation.instances]
    return all(ended) and now - max(ended) > VALID_AFTER_TERMINATION


def reset() -> None:
    with _lock:
        _launches.clear()
