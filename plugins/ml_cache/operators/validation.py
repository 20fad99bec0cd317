"""The teardown of the rollout's validation: its pods go, whatever the validation's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperator

from ml_cache.sensors.validation import kubernetes_hook
from ml_cache.settings.models import RolloutConfig
from ml_cache.validation.manifest import run_selector


class DeleteValidationPodsOperator(BaseOperator):
    """Delete this run's validation pods (by their run label); nothing to delete is fine.

    A teardown with `on_failure_fail_dagrun`: pods it could not delete fail the run, even a validated one.
    """

    template_fields: Sequence[str] = ("rollout",)

    def __init__(self, *, rollout: RolloutConfig, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rollout = rollout
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> list[str]:
        deleted = kubernetes_hook(self.rollout, self.aws_conn_id).delete_pods(run_selector(context["run_id"]))
        self.log.info("Deleted %d validation pod(s): %s", len(deleted), deleted)
        return deleted
