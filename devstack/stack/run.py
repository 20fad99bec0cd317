"""`run`: up, one build followed to its outcome, the rollout its Asset event starts, then down."""

from __future__ import annotations

import time

from devstack.stack import services
from devstack.stack.airflow_standalone import BUILD_DAG_ID
from devstack.stack.dag_runs import ROLLOUT_DAG_ID, rollout_run_id, trigger_build, watch, xcom
from devstack.stack.layout import Layout, say
from devstack.stack.outcome import print_build_outcome, print_phases, print_validation
from devstack.stack.provision import rollout_configured
from devstack.stack.up import up
from devstack.stack.weekly import changed_image_week, unchanged_week


def run(layout: Layout, keep: bool) -> int:
    """0 only when the build (and the rollout, where there is a cluster) succeeded, and, where there is
    a cluster, the next two weekly ticks too: one image changed, then nothing changed."""
    started = time.monotonic()
    try:
        refs = up(layout)
        with_rollout = rollout_configured(layout)
        build_id = trigger_build(layout, with_rollout)
        build_run, tis = watch(layout, BUILD_DAG_ID, build_id)
        resolved = xcom(layout, BUILD_DAG_ID, build_id, "resolve_images") if build_run["state"] == "success" else None
        print_build_outcome(layout, build_run, tis, resolved)
        if build_run["state"] != "success":
            return 1
        if not with_rollout:
            say("no cluster in the local cloud (Terraform was not applied): no rollout to follow")
            return 0
        rollout_id = rollout_run_id(layout)
        rollout, tis = watch(layout, ROLLOUT_DAG_ID, rollout_id)
        print_phases(rollout, tis)
        if rollout["state"] != "success":
            return 1
        print_validation(xcom(layout, ROLLOUT_DAG_ID, rollout_id, "validate_nodes"))
        print(f"First week: {time.monotonic() - started:.1f} s")
        ok = changed_image_week(layout, refs) and unchanged_week(layout)
        print(f"Total: {time.monotonic() - started:.1f} s")
        return 0 if ok else 1
    finally:
        if keep:
            say(f"left running (KEEP=1): Airflow {layout.airflow_url}; `make down` stops it")
        else:
            services.down(layout)
