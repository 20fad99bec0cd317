"""Airflow's plugin loader must leave plugins/ml_cache alone: it imports every .py it finds under its
bare file name (sys.modules[stem]), so ml_cache/hooks/kubernetes.py would replace the kubernetes
package in every task and in the triggerer (seen: "cannot import name 'client' from 'kubernetes'")."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

LOAD = """
import sys
from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory
plugins, errors = _load_plugins_from_plugin_directory(sys.argv[1])
import kubernetes.client
print(kubernetes.__file__)
print(sorted(name for name in sys.modules if name in ("kubernetes", "validation", "assets", "settings", "ec2")))
print(errors)
"""


def test_the_plugin_loader_imports_nothing_of_ml_cache_by_bare_name():
    result = subprocess.run([sys.executable, "-c", LOAD, str(REPO / "plugins")], capture_output=True, text=True,
                            check=True, timeout=120)
    kubernetes_file, bare_names, errors = result.stdout.strip().splitlines()[-3:]
    assert "site-packages" in kubernetes_file
    assert bare_names == "['kubernetes']"  # only the real package, imported by the line above
    assert errors == "{}"
