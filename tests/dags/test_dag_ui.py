"""What the Airflow UI shows of the DAGs: paused state on deploy, the docs' pipeline diagram."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags


def test_paused_on_deploy_only_the_build_which_spends(dags):
    """The build spends (EC2, FSR) and waits for an unpause; what follows a build runs from the start."""
    paused = {dag_id: dags[dag_id].is_paused_upon_creation for dag_id in
              ("ml_container_cache_build", "ml_container_cache_rollout", "ml_container_cache_janitor")}
    assert paused == {"ml_container_cache_build": True, "ml_container_cache_rollout": False,
                      "ml_container_cache_janitor": False}


# Airflow 3.3's docs view renders a fence without a language as inline code (whitespace collapsed: the
# diagram loses its line breaks); with one, as a block that keeps them and wraps lines past its width.
FENCE_WIDTH = 100


def fenced_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """(opening fence, lines) of each fenced block."""
    blocks: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in markdown.splitlines():
        if line.startswith("```"):
            if current is None:
                current = (line, [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current[1].append(line)
    assert current is None, "unclosed fence"
    return blocks


@pytest.mark.parametrize("dag_id", ["ml_container_cache_build", "ml_container_cache_rollout",
                                    "ml_container_cache_janitor", "example_gpu_training"])
def test_docs_diagram_keeps_its_line_breaks(dags, dag_id):
    blocks = fenced_blocks(dags[dag_id].doc_md)
    assert blocks, "the pipeline diagram is a fenced block"
    for fence, lines in blocks:
        assert fence == "```text", f"{fence!r}: a fence without a language renders inline"
        too_wide = [line for line in lines if len(line) > FENCE_WIDTH]
        assert not too_wide, f"wrapped in the docs view: {too_wide}"


def served_params(dag) -> dict:
    """The Params as the UI gets them: the serialized DAG's, dumped as the API's DAG details do."""
    from airflow.serialization.serialized_objects import DagSerialization

    params = DagSerialization.from_dict(DagSerialization.to_dict(dag)).params
    return {name: param.dump() for name, param in params.items()}


def test_trigger_form_shows_the_configured_defaults_in_sections_without_null(dags):
    from ml_cache.settings import load_config

    build = load_config()["build"]
    form = served_params(dags["ml_container_cache_build"])
    assert form["images"]["value"] == build["images"]
    assert form["fsr_availability_zones"]["value"] == build["fsr_availability_zones"]
    assert form["enable_fast_snapshot_restore"]["value"] is True  # the switch is drawn as the run will use it
    assert form["architecture"]["value"] == "x86_64" and form["architecture"]["schema"]["enum"] == ["x86_64", "arm64"]
    sections = list(dict.fromkeys(param["schema"]["section"] for param in form.values()))
    assert sections == ["Images", "Builder", "Volume", "FSR"]
    assert all(param["schema"]["title"] for param in form.values())
    assert ", ".join(build["allowed_registries"]) in form["images"]["schema"]["description_md"].replace("\\", "")
    assert "(ml-cache/published.svg)" in form["images"]["schema"]["description_md"]  # the published set, live
    rollout = served_params(dags["ml_container_cache_rollout"])
    assert {param["schema"]["section"] for param in rollout.values()} == {"Rollout"}
    assert rollout["max_startup_seconds"]["value"] == 10


def test_a_run_with_the_forms_defaults_validates(dags):
    """What the UI submits untouched resolves to the same settings as a run without a form."""
    from ml_cache.settings import load_config, resolve_build_settings

    config = load_config()
    config["aws"]["subnet_ids"] = ["subnet-0123456789abcdef0"]  # a site sets it (the packaged file cannot)
    submitted = {name: param["value"] for name, param in served_params(dags["ml_container_cache_build"]).items()}
    dags["ml_container_cache_build"].params.validate()
    assert resolve_build_settings(config, submitted, region="us-west-2", conf=submitted) == \
        resolve_build_settings(config, {}, region="us-west-2", conf={})
