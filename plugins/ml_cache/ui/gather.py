"""Reads what the page shows: the Asset events, the build runs and the janitor runs with their
`report_cleanup` XCom from Airflow's metadata DB (the api-server's own session), the metadata parameter
through the `aws_default` connection with our SSM hook.

A source that cannot be read becomes a message on the page, never an error page: the events alone still
tell most of the story when AWS is unreachable.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from botocore.config import Config
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, selectinload

from ml_cache.assets import ML_CONTAINER_CACHE, ML_CONTAINER_CACHE_READY
from ml_cache.ui.view_model import BUILD_DAG_ID, JANITOR_DAG_ID, CachePage, Event, Run, build_page

log = logging.getLogger(__name__)
AWS_CONN_ID = "aws_default"
MAX_EVENTS = 120  # two years of weekly builds: the page stays fast however long the pipeline runs
MAX_RUNS = 120
MAX_JANITOR_RUNS = 60  # a year of weekly runs, two months of the default daily ones: reports are small
JANITOR_REPORT_TASK = "report_cleanup"
# One quick try: a page load must not wait out boto's retries when the endpoint is down.
_AWS_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"})


def asset_events(session: Session, asset_name: str, limit: int = MAX_EVENTS) -> list[Event]:
    """The newest `limit` events of the asset, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel

    rows = session.execute(
        select(AssetEvent.timestamp, AssetEvent.extra)
        .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.name == asset_name)
        .order_by(AssetEvent.timestamp.desc())
        .limit(limit)
    ).all()
    return [Event(timestamp=timestamp, extra=extra or {}) for timestamp, extra in reversed(rows)]


def build_runs(session: Session, limit: int = MAX_RUNS) -> list[Run]:
    """The build DAG's newest runs, with their notes (a failed run's cause when one was written)."""
    from airflow.models.dagrun import DagRun

    runs = session.scalars(
        select(DagRun).options(selectinload(DagRun.dag_run_note))  # the notes in one query, not one per run
        .where(DagRun.dag_id == BUILD_DAG_ID).order_by(DagRun.run_after.desc()).limit(limit)
    ).all()
    return [Run(run_id=run.run_id, state=str(run.state), start=run.start_date, end=run.end_date, note=run.note)
            for run in runs]


def janitor_runs(session: Session, limit: int = MAX_JANITOR_RUNS) -> list[Run]:
    """The janitor's newest runs with their notes and `report_cleanup` return value, in one query."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XCOM_RETURN_KEY, XComModel

    report = and_(XComModel.dag_run_id == DagRun.id, XComModel.task_id == JANITOR_REPORT_TASK,
                  XComModel.map_index == -1, XComModel.key == XCOM_RETURN_KEY)
    rows = session.execute(
        select(DagRun, XComModel.value.label("value")).outerjoin(XComModel, report)
        .options(selectinload(DagRun.dag_run_note))
        .where(DagRun.dag_id == JANITOR_DAG_ID).order_by(DagRun.run_after.desc()).limit(limit)
    ).all()
    return [Run(run_id=row.DagRun.run_id, state=str(row.DagRun.state), start=row.DagRun.start_date,
                end=row.DagRun.end_date, note=row.DagRun.note, report=XComModel.deserialize_value(row))
            for row in rows]  # deserialize_value reads the row's `value`: a JSON string or already decoded


def published_parameter() -> dict[str, Any]:
    """The id and metadata parameters as the build published them (names from the pipeline's config)."""
    from ml_cache.hooks.ssm import CacheSsmHook
    from ml_cache.published import read_published
    from ml_cache.settings.config import load_config
    from ml_cache.settings.models import AwsConfig

    aws = (load_config() or {}).get("aws") or {}
    defaults = AwsConfig.model_fields
    parameter = aws.get("ssm_parameter") or defaults["ssm_parameter"].default
    metadata_parameter = aws.get("ssm_metadata_parameter") or defaults["ssm_metadata_parameter"].default
    hook = CacheSsmHook(aws_conn_id=AWS_CONN_ID, config=_AWS_CONFIG)
    published = read_published(hook, parameter=parameter, metadata_parameter=metadata_parameter)
    return {"snapshot_id": published.snapshot_id, "metadata": published.metadata}


def pipeline_name() -> str | None:
    """The config's `pipeline` (what every resource is tagged with), None when the file cannot be read."""
    from ml_cache.settings.config import load_config

    try:
        return (load_config() or {}).get("pipeline")
    except Exception as error:  # the page still renders; validate_inputs names a broken config
        log.warning("ML cache page: cannot read the config: %s", error)
        return None


def fsr_states(snapshot_id: str) -> dict[str, str]:
    """The snapshot's FSR state per AZ as EC2 describes it now (an AZ without an entry has FSR off)."""
    from ml_cache.hooks.ec2 import CacheEc2Hook

    entries = CacheEc2Hook(aws_conn_id=AWS_CONN_ID, config=_AWS_CONFIG).describe_fast_snapshot_restores(snapshot_id)
    return {entry["AvailabilityZone"]: entry["State"] for entry in entries}


def _published(messages: list[str]) -> dict[str, Any] | None:
    """The metadata parameter's content, or None with a message saying why it could not be read."""
    try:
        return published_parameter()
    except Exception as error:  # any AWS or config failure: the page still shows the events
        log.warning("ML cache page: cannot read the published parameter: %s", error)
        messages.append(f"Cannot read the published snapshot from SSM ({type(error).__name__}: {error}); "
                        "showing what the Asset events say.")
        return None


def gather_published(session: Session, *, now: datetime | None = None) -> CachePage:
    """What the trigger form's card shows: the published snapshot (its age from its event, as on the page) and
    whether a rollout validated it; no EC2 call, no runs."""
    messages: list[str] = []
    published = _published(messages)
    return build_page(now=now or datetime.now(UTC), published=published, messages=messages,
                      cache_events=asset_events(session, ML_CONTAINER_CACHE.name),
                      ready_events=asset_events(session, ML_CONTAINER_CACHE_READY.name))


def gather_page(session: Session, *, now: datetime | None = None) -> CachePage:
    """Everything the page needs; each source that fails adds a message instead."""
    messages: list[str] = []
    published = _published(messages)
    if published and published["snapshot_id"]:
        try:
            published["fsr_states"] = fsr_states(published["snapshot_id"])
        except Exception as error:
            log.warning("ML cache page: cannot describe FSR: %s", error)
            messages.append(f"Cannot read the FSR state from EC2 ({type(error).__name__}: {error}); "
                            "showing the AZs enabled at publish.")
    return build_page(now=now or datetime.now(UTC), pipeline=pipeline_name(),
                      cache_events=asset_events(session, ML_CONTAINER_CACHE.name),
                      ready_events=asset_events(session, ML_CONTAINER_CACHE_READY.name),
                      build_runs=build_runs(session), published=published, messages=messages,
                      janitor_runs=janitor_runs(session))
