"""The page's view model and HTML from the producers' real outputs: nothing yet, one build and rollout,
a year of weekly runs; a failed and an up-to-date run; an unreadable parameter."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from ml_cache.ui.render import render_page
from ml_cache.ui.view_model import Event, Run, build_page
from tests.plugins.ml_cache import producers
from tests.plugins.ml_cache.ui import year_of_events as year

NOW = year.FIRST_BUILD + timedelta(weeks=52)


def _published(metadata):
    return {"snapshot_id": metadata["snapshot_id"], "metadata": metadata}


def test_nothing_published_is_said_plainly():
    page = build_page(now=NOW, cache_events=[], ready_events=[], published={"snapshot_id": None, "metadata": {}})
    assert page.empty and page.archs == [] and page.history == [] and page.cost_weeks == []
    html = render_page(page)
    assert "Nothing published yet" in html and "No build has run yet" in html and "No cost reported yet" in html


def test_one_build_and_rollout_from_the_producers():
    cache = Event(timestamp=year.FIRST_BUILD, extra=producers.cache_extra())
    ready = Event(timestamp=year.FIRST_BUILD + timedelta(hours=1), extra=producers.ready_extra())
    metadata = producers.published_metadata()
    page = build_page(now=year.FIRST_BUILD + timedelta(days=2), cache_events=[cache], ready_events=[ready],
                      published=_published(metadata))
    [view] = page.archs
    live = view.live
    assert view.arch == "x86_64" and live.source == "SSM metadata parameter"
    assert live.snapshot_id == producers.SNAPSHOT_ID and live.validated
    assert live.build_run_id == producers.BUILD_RUN_ID and live.rollout_run_id == producers.ROLLOUT_RUN_ID
    assert [(image.ref, image.digest, image.bytes) for image in live.images] == [
        (image["ref"], image["digest"], image["bytes"]) for image in metadata["images"]]
    assert live.fsr == [("us-west-2a", "enabled at publish"), ("us-west-2b", "enabled at publish")]
    assert live.age_seconds == 2 * 86400 and live.mode == "full" and live.volume_size_gib == 60
    assert [row.stages["ready"] for row in view.stages] == [2.0]
    html = render_page(page)
    assert producers.SNAPSHOT_ID in html and producers.PYTORCH_DIGEST in html and producers.BUSYBOX_DIGEST in html
    assert f"/dags/ml_container_cache_rollout/runs/{producers.ROLLOUT_RUN_ID.replace(':', '%3A').replace('+', '%2B')}" \
        in html


def test_a_year_of_weekly_runs_is_fast_and_adds_up():
    cache, ready, metadata = year.weeks(52)
    runs = [Run(run_id=year.build_run_id(week), state="success", start=event.timestamp - timedelta(minutes=70),
                end=event.timestamp - timedelta(minutes=10)) for week, event in enumerate(cache)]
    started = time.perf_counter()
    page = build_page(now=NOW, cache_events=reversed(cache), ready_events=ready, build_runs=runs,
                      published=_published(metadata[-1]))
    html = render_page(page)
    assert time.perf_counter() - started < 0.5  # measured ~2 ms; the page load budget is the DB and SSM
    [view] = page.archs
    assert view.live.snapshot_id == year.snapshot_id(51) and view.live.rollout_run_id == year.rollout_run_id(51)
    assert view.live.full_bytes == 20 * year.GIB and view.live.incremental_bytes == 2 * year.GIB
    assert len(page.history) == 52 and page.history[0].run_id == year.build_run_id(51)
    assert {row.duration_seconds for row in page.history} == {3600.0}
    [series] = view.startup.values()
    assert len(series) == 52 and {(p.cached_seconds, p.uncached_seconds) for p in series} == {(2.0, 336.0)}
    assert [row.baseline for row in view.stages] == [False, True]
    total = metadata[-1]["cost"]["running_total"]
    assert page.cost_total["usd"] == total["usd"] and page.cost_total["runs"] == 52
    assert len(page.cost_weeks) == 52
    assert abs(sum(week.usd for week in page.cost_weeks) - total["usd"]) < 0.01 * 52
    assert html.count('class="startup-chart"') == 1 and html.count("<polyline") == 2
    assert 'class="cost-chart"' in html and f"Total ${total['usd']:,.2f}" in html


def test_cost_weeks_follow_the_cost_reports_aws_time_not_the_events():
    """Airflow's and AWS's clocks agree in production; where they do not (make run moves the local cloud's
    clock a week per tick), the week billed is AWS's."""
    cache, ready, metadata = year.weeks(3)
    same_time = [Event(timestamp=cache[0].timestamp, extra=event.extra) for event in cache]
    page = build_page(now=NOW, cache_events=same_time, ready_events=ready, published=_published(metadata[-1]))
    assert len(page.cost_weeks) == 3


def test_runs_without_an_event_show_as_up_to_date_or_failed_with_their_cause():
    cache, ready, metadata = year.weeks(1)
    start = cache[0].timestamp
    runs = [Run(run_id=year.build_run_id(0), state="success", start=start, end=start + timedelta(hours=1)),
            Run(run_id="scheduled__up-to-date", state="success", start=start + timedelta(weeks=1),
                end=start + timedelta(weeks=1, minutes=2)),
            Run(run_id="manual__bad", state="failed", start=start + timedelta(weeks=1, hours=1),
                end=start + timedelta(weeks=1, hours=1, minutes=1), note="image busybox;rm is not a reference"),
            Run(run_id="manual__now", state="running", start=start + timedelta(weeks=2))]
    page = build_page(now=NOW, cache_events=cache, ready_events=ready, build_runs=runs,
                      published=_published(metadata[0]))
    assert [(row.run_id, row.outcome, row.cause) for row in page.history] == [
        ("manual__now", "running", None),
        ("manual__bad", "failed", "image busybox;rm is not a reference"),
        ("scheduled__up-to-date", "up to date", None),
        (year.build_run_id(0), "full", None)]
    assert "busybox;rm is not a reference" in render_page(page)


def test_fsr_as_ec2_describes_it_now_over_the_zones_enabled_at_publish():
    cache, ready, metadata = year.weeks(1)
    published = {**_published(metadata[0]), "fsr_states": {"us-west-2a": "enabled", "us-west-2c": "optimizing"}}
    [view] = build_page(now=NOW, cache_events=cache, ready_events=ready, published=published).archs
    assert view.live.fsr == [("us-west-2a", "enabled"), ("us-west-2b", "disabled"), ("us-west-2c", "optimizing")]


def test_a_baseline_that_found_its_image_on_the_node_is_no_uncached_start():
    cache, ready, metadata = year.weeks(2)
    warm = json.loads(json.dumps(ready[1].extra))
    for baseline in warm["validation"]["baselines"]:
        baseline["cache_hit"] = True  # the kubelet reported the image already present
    ready[1] = Event(timestamp=ready[1].timestamp, extra=warm)
    [view] = build_page(now=NOW, cache_events=cache, ready_events=ready, published=_published(metadata[1])).archs
    [series] = view.startup.values()
    assert [(p.cached_seconds, p.uncached_seconds) for p in series] == [(2.0, 336.0), (2.0, None)]
    assert "baseline, image was on the node" in render_page(build_page(
        now=NOW, cache_events=cache, ready_events=ready, published=_published(metadata[1])))


def test_unreadable_parameter_falls_back_to_the_newest_event_with_a_message():
    cache, ready, _ = year.weeks(3)
    page = build_page(now=NOW, cache_events=cache, ready_events=ready, published=None,
                      messages=["Cannot read the published snapshot from SSM (EndpointConnectionError: ...)"])
    [view] = page.archs
    assert view.live.snapshot_id == year.snapshot_id(2) and view.live.source == "newest Asset event"
    assert view.live.images[0].bytes is None  # sizes live only in the parameter
    html = render_page(page)
    assert "role=alert>Cannot read the published snapshot from SSM" in html


def test_values_are_escaped():
    cache, ready, metadata = year.weeks(1)
    runs = [Run(run_id="manual__<script>", state="failed", note="<img src=x onerror=alert(1)>")]
    html = render_page(build_page(now=NOW, cache_events=cache, ready_events=ready, build_runs=runs,
                                  published=_published(metadata[0])))
    assert "<script>" not in html and "<img src=x" not in html and "&lt;img src=x" in html
