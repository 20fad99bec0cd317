"""EarlierResult: an earlier task's XCom at render time, without an edge; paths checked at parse time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import AirflowSkipException

from ml_cache.earlier_result import EarlierResult
from ml_cache.settings import BuildSettings, load_config, resolve_build_settings

CONFIG = Path(__file__).resolve().parents[3] / "plugins/ml_cache/defaults/ml_container_cache.yaml"


def context_with(xcoms: dict[str, object]) -> dict[str, object]:
    ti = SimpleNamespace(xcom_pull=lambda task_ids: xcoms.get(task_ids))
    return {"ti": ti}


@pytest.fixture
def settings() -> dict:
    config = load_config(str(CONFIG))
    config["aws"] = {**config["aws"], "subnet_ids": ["subnet-0123abcd"]}  # a builder needs one (terraform output)
    return resolve_build_settings(config, {}, region="us-west-2").model_dump(mode="json")


def test_a_model_result_resolves_to_the_validated_model_and_its_paths(settings):
    ref = EarlierResult("validate_inputs", BuildSettings)
    context = context_with({"validate_inputs": settings})
    assert isinstance(ref.resolve(context), BuildSettings)
    assert ref["build.images"].resolve(context) == settings["build"]["images"]
    assert ref["timeouts"]["poll_seconds"].resolve(context) == 15
    assert ref["platform"].resolve(context) == "linux/amd64"  # properties too
    assert ref["builder_launch"].resolve(context).pipeline == "ml-container-cache"


def test_a_plain_result_follows_dict_keys():
    context = context_with({"wait_for_builder": {"instance_id": "i-1", "data_volume_id": "vol-1"}})
    assert EarlierResult("wait_for_builder")["data_volume_id"].resolve(context) == "vol-1"


@pytest.mark.parametrize("path", ["build.imagez", "timeouts.build", "nope", "build.images.x.y"])
def test_a_wrong_path_fails_when_the_dag_is_parsed(path):
    with pytest.raises(KeyError, match="has no attribute"):
        EarlierResult("validate_inputs", BuildSettings)[path]


def test_no_edge_is_drawn():
    assert tuple(EarlierResult("validate_inputs", BuildSettings)["build"].iter_references()) == ()


def test_a_missing_result_skips_with_the_reason():
    with pytest.raises(AirflowSkipException, match="validate_inputs left no result"):
        EarlierResult("validate_inputs", BuildSettings).resolve(context_with({}))
