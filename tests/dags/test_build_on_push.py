"""Build on push end to end: pushes to the local cloud's ECR -> EventBridge rule -> SQS -> the build DAG's
Asset watcher in a real Airflow (`airflow standalone`: scheduler, triggerer, DAG processor) -> exactly ONE
asset-triggered build run for a burst, the queue emptied once the event was stored; a burst during that
build makes exactly one run after it."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from devstack.process import free_port
from tests.dags.airflow_waits import until
from tests.devstack.moto_ext.test_ecr_push_events import manifest

DAG_ID = "ml_container_cache_build"
QUIET = 5
PUSHES = 5


def _push_queue(cloud, repository: str) -> str:
    """What terraform/modules/ecr-push-events makes (its apply is tested in tests/terraform): rule, queue, policy."""
    events, sqs = cloud.client("events"), cloud.client("sqs")
    name = f"push-e2e-{uuid.uuid4().hex[:6]}"
    pattern = {"source": ["aws.ecr"], "detail-type": ["ECR Image Action"],
               "detail": {"action-type": ["PUSH"], "result": ["SUCCESS"], "repository-name": [repository]}}
    rule_arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern))["RuleArn"]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Statement": [{
        "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}}]})})
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return url


@pytest.mark.slow
def test_a_burst_of_pushes_makes_exactly_one_build_run(cloud, tmp_path):
    from devstack import process
    from devstack.stack import dag_runs
    from devstack.stack.airflow_standalone import start_airflow
    from devstack.stack.layout import Layout

    repository = f"team/pushed-{uuid.uuid4().hex[:6]}"
    queue_url = _push_queue(cloud, repository)
    ecr, sqs = cloud.client("ecr"), cloud.client("sqs")
    ecr.create_repository(repositoryName=repository)
    cloud.set_faults(agent_offline=True)  # a run stays at wait_for_builder: we count runs, not builds
    # ... for the whole test: at the suite's 20 s agent deadline the first run failed before the second burst's
    # event, which then started a run at once (CI, 2026-12-04)
    cloud.config_path.write_text(cloud.config_path.read_text().replace("agent_online_seconds: 20",
                                                                       "agent_online_seconds: 900"))
    layout = Layout(home=tmp_path, cloud_port=int(cloud.endpoint.rsplit(":", 1)[1]), registry_port=free_port(),
                    airflow_port=free_port())
    env = {key: value for key, value in os.environ.items()  # the pytest session's Airflow is not this one
           if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN", "ML_CACHE")) and key != "AIRFLOW_HOME"}
    env.update(ML_CACHE_PUSH_QUEUE_URL=queue_url, ML_CACHE_PUSH_QUIET_SECONDS=str(QUIET))
    airflow = start_airflow(layout, base_env=env)
    log_file = layout.log_file("airflow")
    runs_path = f"/dags/{DAG_ID}/dagRuns"

    def runs() -> list[dict]:
        return dag_runs.api(layout, "GET", runs_path)["dag_runs"]

    def watcher_events() -> list[dict]:
        events = dag_runs.api(layout, "GET", "/assets/events")["asset_events"]
        return [event for event in events if (event.get("extra") or {}).get("from_trigger")]

    def queue_counts() -> tuple[str, str]:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]

    def push_burst(count: int) -> list[str]:
        """A CI job pushing tag after tag, a second apart; the digests pushed."""
        digests = []
        for _ in range(count):
            digests.append(ecr.put_image(repositoryName=repository, imageManifest=manifest(),
                                         imageTag=uuid.uuid4().hex[:8])["image"]["imageId"]["imageDigest"])
            time.sleep(1)
        assert len(set(digests)) == count
        return digests

    try:
        dag_runs.api(layout, "PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        until("the push watcher registered", lambda: "ecr_push_queue" in json.dumps(
            dag_runs.api(layout, "GET", "/assets", params={"name_pattern": "ml_container_cache_ecr_pushes"})),
            120, log_file)
        time.sleep(10)  # the triggerer picks the watcher's trigger up on its next loop
        digests = push_burst(PUSHES)
        (run,) = until("an asset-triggered run", runs, 240, log_file)
        assert run["run_type"] == "asset_triggered"
        time.sleep(QUIET + 20)  # room for a second event or run, if the burst were split
        assert [r["dag_run_id"] for r in runs()] == [run["dag_run_id"]]
        (event,) = watcher_events()
        assert event["extra"]["payload"]["push_count"] == PUSHES
        assert [push["digest"] for push in event["extra"]["payload"]["pushes"]] == digests  # all, in order
        assert queue_counts() == ("0", "0")  # deleted once the event was stored

        # A burst while that build runs: one more event, no run beside it (max_active_runs=1) ...
        push_burst(3)
        until("the second burst's event", lambda: len(watcher_events()) == 2, 120, log_file)
        time.sleep(10)
        assert [r["dag_run_id"] for r in runs()] == [run["dag_run_id"]]
        # ... and exactly one run after it.
        dag_runs.api(layout, "PATCH", f"{runs_path}/{run['dag_run_id']}", json={"state": "failed"})
        second = until("the queued run", lambda: [r for r in runs() if r["dag_run_id"] != run["dag_run_id"]],
                       120, log_file)
        time.sleep(15)
        assert len(runs()) == 2 and len(second) == 1 and second[0]["run_type"] == "asset_triggered"
        dag_runs.api(layout, "PATCH", f"{runs_path}/{second[0]['dag_run_id']}", json={"state": "failed"})
    finally:
        process.stop(airflow)
        cloud.reset_faults()
