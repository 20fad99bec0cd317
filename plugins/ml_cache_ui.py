"""The "ML cache" page as an Airflow plugin: its FastAPI app (ml_cache.ui.app) and a nav entry that shows it
in the UI. This is the only file under plugins/ that Airflow loads as a plugin (.airflowignore skips ml_cache/)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ml_cache.ui.app import create_app
from ml_cache.ui.paths import URL_PREFIX, relative


class MlCacheUiPlugin(AirflowPlugin):
    name = "ml_cache_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ML cache"}]
    # relative: the UI's iframe resolves it against its <base href> (a sub-path deployment too)
    external_views = [{"name": "ML cache", "href": relative("/"), "destination": "nav",
                       "url_route": URL_PREFIX.strip("/")}]
