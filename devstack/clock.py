"""The local cloud's clock: real UTC time plus an offset that tests advance, so weeks pass in seconds.

Everything AWS would timestamp (moto's LaunchTime, StartTime, LastModifiedDate, FSR transitions,
token expiry, the HTTP `Date` header of every answer) reads this clock. It only moves forward.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

_lock = threading.Lock()
_offset_seconds = 0.0


def now() -> datetime:
    """Simulated UTC now (timezone-aware)."""
    with _lock:
        offset = _offset_seconds
    return datetime.now(UTC) + timedelta(seconds=offset)


def naive_utcnow() -> datetime:
    """Simulated UTC now without tzinfo: what moto.core.utils.utcnow returns."""
    return now().replace(tzinfo=None)


def time() -> float:
    """Simulated epoch seconds (the clock's time.time())."""
    return now().timestamp()


def advance(seconds: float) -> dict[str, Any]:
    """Move the clock forward; time never goes back (FSR states and ages would make no sense)."""
    global _offset_seconds
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError(f"advance_seconds must be a number >= 0, got {seconds!r}")
    with _lock:
        _offset_seconds += float(seconds)
    return as_dict()


def as_dict() -> dict[str, Any]:
    with _lock:
        offset = _offset_seconds
    return {"now": (datetime.now(UTC) + timedelta(seconds=offset)).isoformat(), "offset_seconds": offset}
