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
