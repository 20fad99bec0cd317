"""Steps of ml_container_cache_janitor: inventory (read-only), plan (pure), apply, report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk.api.client import ServerResponseError
from airflow.sdk.exceptions import AirflowRuntimeError

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.eks import CacheEksHook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.janitor.actions import apply_plan
from ml_cache.janitor.inventory import BUILD_DAG_ID, Inventory
from ml_cache.janitor.inventory import take_inventory as inventory_of
from ml_cache.janitor.plan import Plan, plan_cleanup
from ml_cache.janitor.report import cleanup_report, report_table
from ml_cache.settings import JanitorSettings, load_config, resolve_janitor_settings

log = logging.getLogger(__name__)


def validate_inputs(params: dict[str, Any] | None, *, aws_conn_id: str) -> dict[str, Any]:
    """Config `lifecycle:`/`rollout:` with the run's `dry_run`, validated before any AWS call."""
    region = CacheEc2Hook(aws_conn_id=aws_conn_id).conn_region_name
    return resolve_janitor_settings(load_config(), dict(params or {}), region=region).model_dump(mode="json")


def build_run_state(ti: Any) -> Callable[[str], str | None]:
    """The state of a build run through the Task SDK (the API server): None when no such run exists.
    A worker's supervisor relays the API's 404 as AirflowRuntimeError; `dag.test()`'s in-process one
    raises the client's ServerResponseError itself."""
    def state(run_id: str) -> str | None:
        try:
            found = ti.get_dagrun_state(dag_id=BUILD_DAG_ID, run_id=run_id)
        except AirflowRuntimeError as error:
            if (error.error.detail or {}).get("status_code") == HTTPStatus.NOT_FOUND:
                return None
            raise
        except ServerResponseError as error:
            if error.response.status_code == HTTPStatus.NOT_FOUND:
                return None
            raise
        return str(getattr(found, "value", found))

    return state


def _inventory(settings: JanitorSettings, ti: Any, aws_conn_id: str) -> Inventory:
    return inventory_of(settings, build_run_state(ti), ec2=CacheEc2Hook(aws_conn_id=aws_conn_id),
                        ssm=CacheSsmHook(aws_conn_id=aws_conn_id), eks=CacheEksHook(aws_conn_id=aws_conn_id),
                        worker_now=datetime.now(UTC))


def take_inventory(settings: JanitorSettings, ti: Any, *, aws_conn_id: str) -> dict[str, Any]:
    """Builders, volumes, snapshots with FSR, what references them, document versions (read-only)."""
    inventory = _inventory(settings, ti, aws_conn_id)
    log.info("Inventory on the %s clock (%s): %d builder(s), %d volume(s), %d snapshot(s), live %s, "
             "%d document version(s)", inventory.clock, inventory.now.isoformat(), len(inventory.builders),
             len(inventory.volumes), len(inventory.snapshots), inventory.live_snapshot,
             len(inventory.document_versions))
    return inventory.model_dump(mode="json")


def plan(settings: JanitorSettings, inventory: Inventory) -> dict[str, Any]:
    """Every action with its reason and savings, and what is kept and why (pure)."""
    decided = plan_cleanup(inventory, settings)
    for action in decided.actions:
        log.info("plan: %s %s: %s", action.action, action.resource, action.reason)
    for kept in decided.kept:
        log.info("keep: %s: %s", kept.resource, kept.reason)
    return decided.model_dump(mode="json")


def apply(settings: JanitorSettings, inventory: Inventory, decided: Plan, ti: Any, *,
          aws_conn_id: str) -> dict[str, Any]:
    """Does the plan (skipped in a dry run). A retry re-plans from a fresh inventory: the world moved."""
    if settings.dry_run:
        raise AirflowSkipException("dry run: nothing is changed (report_cleanup says what would be done)")
    if ti.try_number > 1:
        inventory = _inventory(settings, ti, aws_conn_id)
        decided = plan_cleanup(inventory, settings)
    results = apply_plan(decided, ec2=CacheEc2Hook(aws_conn_id=aws_conn_id),
                         ssm=CacheSsmHook(aws_conn_id=aws_conn_id),
                         fsr_timeout_seconds=settings.timeouts.fsr_seconds,
                         poll_seconds=settings.timeouts.poll_seconds)
    return {"inventory": inventory.model_dump(mode="json"), "plan": decided.model_dump(mode="json"),
            "results": results}


def report(settings: JanitorSettings, inventory: Inventory, decided: Plan,
           applied: dict[str, Any] | None) -> dict[str, Any]:
    """Logs the table (action, resource, reason, $/month saved, total) and returns it as JSON."""
    if applied is None:  # dry run: apply_cleanup was skipped
        result = cleanup_report(inventory, decided, None, dry_run=True)
    else:
        result = cleanup_report(Inventory.model_validate(applied["inventory"]),
                                Plan.model_validate(applied["plan"]), applied["results"], dry_run=False)
    log.info("%s", report_table(result))
    return result
