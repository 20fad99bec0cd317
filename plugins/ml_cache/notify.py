"""Notifications of the DAGs' runs through Airflow notifiers: SNS (the Amazon provider's SnsNotifier), Slack
optionally, as configured under `notifications:` in the config file (settings.models.NotificationsConfig).

Who knows the cause: only the worker that ran the failed task holds its exception (a DAG callback gets the run
id and a reason, and under `dag.test()` cannot read XCom). So a failed task notifies from its own
`on_failure_callback` (its last try, on the worker), with the exception's message in one line; the DAG's
`on_failure_callback` notifies only for a run that failed without a failed task (timed out, deadlocked). Every
message is one line: the DAG, the run id, the task, the cause, and the run's page when `[api] base_url` is set.
Messages are sent with the notifiers' `notify()`, never rendered by Jinja (an exception's text is data), and
pass Airflow's secrets masker. A channel that fails is logged and raised after the others were tried;
Airflow runs each callback of a list on its own, so the cleanups before a notifier run whatever it does.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import quote

from airflow.sdk.bases.notifier import BaseNotifier

from ml_cache.images import InvalidInputs
from ml_cache.settings.config import load_config
from ml_cache.settings.models import NotificationsConfig
from ml_cache.settings.resolve import validated

log = logging.getLogger(__name__)

DAG_PREFIX = "ml_container_cache_"
CAUSE_MAX_CHARS = 500
SUBJECT_MAX_CHARS = 100  # SNS: ASCII, no line breaks, at most 100 characters
Event = Literal["task_failure", "run_failure", "run_success"]


class NotificationFailed(RuntimeError):
    """A channel refused or could not be reached (the others were still tried)."""


def configured_notifications() -> NotificationsConfig | None:
    """The config file's `notifications:`, validated; None when nothing can be sent (no channel, or a file that
    does not validate: `validate_inputs` names that error in the run)."""
    try:
        config = validated(NotificationsConfig, load_config().get("notifications") or {})
    except InvalidInputs as error:
        log.error("No notification sent: notifications: does not validate: %s", error)
        return None
    return config if config.channels else None


def _redact(text: str) -> str:
    from airflow.sdk._shared.secrets_masker import redact

    return str(redact(text))


def one_line(error: BaseException | str | None) -> str:
    """An exception's type and message on one line (no traceback), at most CAUSE_MAX_CHARS, secrets masked."""
    if error is None:
        return "no exception recorded (the task process was lost or killed: see the task log)"
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > CAUSE_MAX_CHARS:
        text = text[:CAUSE_MAX_CHARS - 1] + "…"
    return _redact(text)


def run_link(dag_id: str, run_id: str) -> str | None:
    """The run's page in the UI, when `[api] base_url` says where the UI is."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback=None)
    return f"{base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}" if base else None


def _with_link(text: str, link: str | None) -> str:
    return f"{text} | {link}" if link else text


def failure_message(dag_id: str, run_id: str, task_id: str | None, cause: str, link: str | None = None) -> str:
    """`<dag> run <run_id> FAILED at task <task>: <cause> | <link>`: one line."""
    where = f" at task {task_id}" if task_id else ""
    return _with_link(f"{dag_id} run {run_id} FAILED{where}: {cause}", link)


def success_message(dag_id: str, run_id: str, link: str | None = None) -> str:
    return _with_link(f"{dag_id} run {run_id} succeeded", link)


def late_message(dag_id: str, run_id: str, minutes: int, deadline: Any, link: str | None = None) -> str:
    return _with_link(f"{dag_id} run {run_id} is LATE: still running {minutes} min past the average of its last "
                      f"successful runs (deadline {deadline})", link)


def subject(dag_id: str, what: str) -> str:
    text = f"{dag_id} {what}".encode("ascii", "replace").decode()
    return text[:SUBJECT_MAX_CHARS]


def run_failure_cause(reason: str | None) -> str:
    """Why a run failed without a failed task (a DAG callback's reason)."""
    if reason == "timed_out":
        return ("the run passed its dagrun_timeout; the scheduler skipped the unfinished tasks, teardowns "
                "included (the DAG's failure callback cleans up)")
    return f"the run failed without a failed task ({reason or 'no reason given'})"


def topic_region(topic_arn: str) -> str:
    """SNS publishes to a topic only in the topic's region, whatever the connection's region."""
    return topic_arn.split(":")[3]


def channels(config: NotificationsConfig, title: str, message: str, *, aws_conn_id: str | None) -> list[BaseNotifier]:
    """The providers' notifiers for every configured channel."""
    notifiers: list[BaseNotifier] = []
    if config.sns_topic_arn:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        notifiers.append(SnsNotifier(aws_conn_id=aws_conn_id, target_arn=config.sns_topic_arn, message=message,
                                     subject=title, region_name=topic_region(config.sns_topic_arn)))
    if config.slack_webhook_conn_id:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        notifiers.append(SlackWebhookNotifier(slack_webhook_conn_id=config.slack_webhook_conn_id, text=message))
    return notifiers


def send(config: NotificationsConfig, title: str, message: str, context: Any, *, aws_conn_id: str | None) -> None:
    """Every channel is tried; NotificationFailed names those that failed."""
    failed = []
    for notifier in channels(config, title, message, aws_conn_id=aws_conn_id):
        try:
            notifier.notify(context)  # not notifier(context): that would render the message as a template
        except Exception as error:
            log.exception("Notification through %s failed", type(notifier).__name__)
            failed.append(f"{type(notifier).__name__}: {one_line(error)}")
    if failed:
        raise NotificationFailed("; ".join(failed))
    log.info("Notified: %s", message)


class PipelineNotifier(BaseNotifier):
    """A DAG's or task's callback: composes the one-line message for `event` and sends it where configured.

    `task_failure` goes in default_args (each task's last failed try), `run_failure` in the DAG's
    on_failure_callback list after the cleanups, `run_success` in its on_success_callback."""

    def __init__(self, event: Event, *, aws_conn_id: str | None = "aws_default"):
        super().__init__()
        self.event = event
        self.aws_conn_id = aws_conn_id

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing is templated: the message holds an exception's text, which is data (and a DAG callback under
        dag.test() gets a SerializedDAG, which has no template environment)."""

    def message(self, context: Any) -> tuple[str, str] | None:
        """(subject, message) for this context, or None when this event sends nothing."""
        dag_id = context["dag"].dag_id
        ti = context.get("ti")
        run_id = context.get("run_id") or ti.run_id
        link = run_link(dag_id, run_id)
        if self.event == "task_failure":
            task = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            cause = one_line(context.get("exception"))
            return subject(dag_id, f"failed at {task}"), failure_message(dag_id, run_id, task, cause, link)
        if self.event == "run_failure":
            if context.get("reason") == "task_failure":
                return None  # the failed task's own callback sent it, with the exception
            cause = one_line(run_failure_cause(context.get("reason")))
            return subject(dag_id, "failed"), failure_message(dag_id, run_id, None, cause, link)
        return subject(dag_id, "succeeded"), success_message(dag_id, run_id, link)

    def notify(self, context: Any) -> None:
        config = configured_notifications()
        dag_id = context["dag"].dag_id
        if config is None or dag_id.removeprefix(DAG_PREFIX) not in config.dags:
            return
        if not (config.on_success if self.event == "run_success" else config.on_failure):
            return
        composed = self.message(context)
        if composed is not None:
            send(config, *composed, context, aws_conn_id=self.aws_conn_id)


async def alert_late_build(*, aws_conn_id: str | None, topic_arn: str, minutes: int,
                           context: dict[str, Any] | None = None) -> None:
    """The deadline alert's callback (runs in the triggerer): SNS, with what the scheduler's simple context says."""
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    run = (context or {}).get("dag_run") or {}
    dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
    deadline = ((context or {}).get("deadline") or {}).get("deadline_time", "?")
    message = late_message(dag_id, run_id, minutes, deadline, run_link(dag_id, run_id))
    await SnsNotifier(aws_conn_id=aws_conn_id, target_arn=topic_arn, message=message,
                      region_name=topic_region(topic_arn),
                      subject=subject(dag_id, "is running late")).async_notify(context or {})


def late_build_alert(aws_conn_id: str | None):
    """The build DAG's `deadline`: an Airflow Deadline Alert at the average runtime of its last 10 successful runs
    (none until 3 exist) plus `notifications.late_build_minutes`, or None when not configured. Read when the DAG
    is parsed (like the run timeout); a file that does not validate gives None (validate_inputs names it)."""
    try:
        config = validated(NotificationsConfig, load_config().get("notifications") or {})
    except InvalidInputs:
        return None
    if config.late_build_minutes is None or config.sns_topic_arn is None or "build" not in config.dags:
        return None
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.AVERAGE_RUNTIME(max_runs=10, min_runs=3),
        interval=timedelta(minutes=config.late_build_minutes),
        callback=AsyncCallback(alert_late_build, kwargs={"aws_conn_id": aws_conn_id, "topic_arn": config.sns_topic_arn,
                                                         "minutes": config.late_build_minutes}))
