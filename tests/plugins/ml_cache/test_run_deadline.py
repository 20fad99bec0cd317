"""The run timeout is the sum of the deadlines a run can spend one after another, plus the margin."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from ml_cache.images import InvalidInputs
from ml_cache.operators.build_script import DELIVERY_TIMEOUT_SECONDS
from ml_cache.run_deadline import DAG_WAITS, check_run_fits, configured_timeouts, run_timeout
from ml_cache.settings.models import Timeouts

SMALL = Timeouts(poll_seconds=1, agent_online_seconds=10, build_seconds=100, snapshot_seconds=1000,
                 fsr_seconds=10000, update_seconds=7, validation_seconds=3, run_margin_seconds=60)


def test_build_counts_both_builder_waits_both_commands_with_delivery_the_snapshot_and_fsr():
    # running + agent online, build + quiesce (each with its delivery timeout), snapshot, FSR, margin
    expected = 2 * 10 + 2 * (100 + DELIVERY_TIMEOUT_SECONDS) + 1000 + 10000 + 60
    assert run_timeout("build", SMALL) == timedelta(seconds=expected)


def test_janitor_counts_the_fsr_wait_of_apply_cleanup():
    assert run_timeout("janitor", SMALL) == timedelta(seconds=10000 + 60)


def test_every_wait_names_a_deadline_of_the_config():
    for dag, waits in DAG_WAITS.items():
        assert waits, dag
        assert set(waits) <= set(Timeouts.model_fields) - {"poll_seconds", "run_margin_seconds"}, dag


def test_defaults_outlast_the_old_eight_hours():
    """The issue's audit: 8 h was shorter than the stages' deadlines."""
    assert run_timeout("build", Timeouts()) > timedelta(hours=12)


def test_a_deadline_raised_after_parse_is_refused_naming_both_timeouts():
    parsed = run_timeout("build", SMALL)
    check_run_fits("build", SMALL, parsed)  # unchanged config: fits
    longer = SMALL.model_copy(update={"build_seconds": 200})
    with pytest.raises(InvalidInputs, match=r"need a run timeout of .* parsed with .*re-parsed"):
        check_run_fits("build", longer, parsed)
    check_run_fits("build", SMALL.model_copy(update={"build_seconds": 50}), parsed)  # shorter still fits
    check_run_fits("build", longer, None)  # a DAG without a run timeout never times out


def test_configured_timeouts_read_the_config_file_and_fall_back_to_defaults(tmp_path, monkeypatch):
    config = tmp_path / "ml_container_cache.yaml"
    monkeypatch.setenv("ML_CACHE_CONFIG", str(config))
    config.write_text(yaml.safe_dump({"timeouts": {"build_seconds": 1234}}))
    assert configured_timeouts().build_seconds == 1234
    config.write_text(yaml.safe_dump({"timeouts": {"build_seconds": -1}}))  # invalid: the DAG still parses
    assert configured_timeouts() == Timeouts()
