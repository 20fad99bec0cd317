"""Our JSON waiters (plugins/ml_cache/waiters/<client>.json) on top of the provider's and botocore's."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from botocore.waiter import WaiterModel

WAITERS_DIR = Path(__file__).resolve().parent.parent / "waiters"


@cache
def _waiter_config(client_type: str) -> dict[str, Any]:
    path = WAITERS_DIR / f"{client_type}.json"
    return json.loads(path.read_text()) if path.exists() else {"version": 2, "waiters": {}}


class CustomWaitersMixin:
    """Adds our waiters without hiding the provider's: `AwsBaseHook` reads only one custom file
    (`waiter_path`, the provider's own for EKS), so ours are looked up first and the rest falls through."""

    client_type: str

    @property
    def cache_waiter_path(self) -> Path | None:
        path = WAITERS_DIR / f"{self.client_type}.json"
        return path if path.exists() else None

    def get_waiter(self, waiter_name: str, parameters: dict[str, str] | None = None,
                   config_overrides: dict[str, Any] | None = None, deferrable: bool = False, client: Any = None):
        ours = _waiter_config(self.client_type)
        if waiter_name not in ours["waiters"]:
            return super().get_waiter(waiter_name, parameters, config_overrides, deferrable, client)  # type: ignore[misc]
        from airflow.providers.amazon.aws.waiters.base_waiter import BaseBotoWaiter

        if deferrable and not client:
            raise ValueError("client must be provided for a deferrable waiter.")
        config = copy.deepcopy(ours)
        if config_overrides is not None:
            config["waiters"][waiter_name].update(config_overrides)
        config = self._apply_parameters_value(config, waiter_name, parameters)  # type: ignore[attr-defined]
        return BaseBotoWaiter(client=client or self._client, model_config=config,  # type: ignore[attr-defined]
                              deferrable=deferrable).waiter(waiter_name)

    def list_waiters(self) -> list[str]:
        inherited = super().list_waiters()  # type: ignore[misc]
        return [*inherited, *(name for name in WaiterModel(_waiter_config(self.client_type)).waiter_names
                              if name not in inherited)]
