"""The "ML cache" page as an Airflow plugin: its FastAPI app (ml_cache.ui.app) and a nav entry that shows it
in the UI. This is the only file under plugins/ that Airflow loads as a plugin (.airflowignore skips ml_cache/)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ml_cache.ui.app import URL_PREFIX, create_app


class MlCacheUiPlugin(AirflowPlugin):
    name = "ml_cache_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ML cache"}]
    external_views = [{"name": "ML cache", "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "ml-cache"}]
