"""Point a provider hook at our JSON waiters (plugins/ml_cache/waiters/<client>.json)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

WAITERS_DIR = Path(__file__).resolve().parent.parent / "waiters"


class CustomWaitersMixin:
    """`AwsBaseHook.get_waiter` reads custom waiters from `waiter_path`; ours live in this package."""

    client_type: str

    @cached_property
    def waiter_path(self) -> Path | None:
        path = WAITERS_DIR / f"{self.client_type}.json"
        return path if path.exists() else None
