"""The "ML cache" page as an Airflow plugin: its FastAPI app (ml_cache.ui.app) and a nav entry that shows it
in the UI. This is the only file under plugins/ that Airflow loads as a plugin (.airflowignore skips ml_cache/)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ml_cache.ui.app import URL_PREFIX, create_app


class MlCacheUiPlugin(AirflowPlugin):
    name = "ml_cache_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ML cache"}]
    # Relative: the UI's iframe resolves it against the index page's <base href>, which is Airflow's base path, so
    # the page is found also when [api] base_url puts Airflow under a sub-path (an absolute "/ml-cache/" is not).
    external_views = [{"name": "ML cache", "href": f"{URL_PREFIX.lstrip('/')}/", "destination": "nav",
                       "url_route": "ml-cache"}]
