"""GetAuthorizationToken that issues a token per call (moto 5.2.5 returns a fixed one that expired in 2015)."""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult

from devstack.moto_ext.ecr import models


def get_authorization_token(self: Any) -> ActionResult:
    """One token for the caller; one AuthorizationData per requested registry id (deprecated parameter)."""
    token = models.issue(self.current_account, self.region)
    registry_ids = self._get_param("registryIds") or [self.current_account]
    return ActionResult({"authorizationData": [token.authorization_data(rid) for rid in registry_ids]})
