"""What `python -m devstack up|run|down` brings up on this machine: registry, local cloud, Airflow."""

import sys

from devstack.sandbox import REPO_ROOT

# `run` reports with the DAGs' own definitions (ml_cache.cost, ml_cache.tags); plugins/ is their
# import root, as in Airflow and pytest.
if str(REPO_ROOT / "plugins") not in sys.path:
    sys.path.append(str(REPO_ROOT / "plugins"))
