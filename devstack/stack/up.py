"""`up`: a fresh stack on loopback: seeded registry, local cloud, provisioned resources, Airflow."""

from __future__ import annotations

import time

from devstack.stack import airflow_celery, dag_runs, private_registries, services
from devstack.stack.airflow_standalone import start_airflow
from devstack.stack.layout import Layout, say
from devstack.stack.provision import create_notification_topic, provision, write_config

CLOUD_ENV = {
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",  # Terraform attaches AWS managed policies to the builder role
    "DEVSTACK_NODES": "1",  # node groups get real nodes (restored volume, containerd, kubelet)
}


def up(layout: Layout, flavour: str = "standalone") -> dict[str, str]:
    """Stop and forget an earlier (maybe interrupted) run, start everything, Airflow as `flavour`
    (standalone, or celery: devstack/stack/airflow_celery.py); the demo image refs
    ({"small": anonymous, "ecr": through ECR, "private": through the bearer registry})."""
    services.preflight()
    if flavour == "celery" and airflow_celery.missing():
        raise SystemExit(f"The Celery flavour cannot run here: {airflow_celery.missing()}")
    services.down(layout)
    services.forget(layout)
    layout.home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    refs = services.start_registry(layout)
    services.start_cloud(layout, (layout.registry, f"127.0.0.1:{layout.private_front_port}"), CLOUD_ENV)
    private = private_registries.start(layout)
    refs = {**refs, **private.refs}
    config = provision(layout)
    write_config(layout, config, refs, private, topic_arn=create_notification_topic(layout))
    say(f"local cloud at {layout.endpoint} ({time.monotonic() - started:.1f} s); starting Airflow")
    if flavour == "celery":
        airflow_celery.start_airflow_celery(layout)
    else:
        start_airflow(layout)
    dag_runs.unpause(layout)  # the whole lifecycle runs, whatever the DAGs' paused-at-creation default
    say(f"Airflow UI: {layout.airflow_url} (config {layout.config_path})")
    return refs
