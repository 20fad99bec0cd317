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
