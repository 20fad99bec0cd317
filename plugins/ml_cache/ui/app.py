"""The page's FastAPI app, mounted by the api-server under URL_PREFIX (ml_cache_ui.py registers it).

Airflow mounts a plugin's app as it is: it adds no authentication. So every route here depends on
Airflow's own checks: a user from the UI's JWT (the `_token` cookie the browser sends with the UI's iframe
request, or an `Authorization: Bearer` token), then the auth manager's verdict on reading assets and the
runs of the three DAGs and the janitor's XComs (its reports). No token: 401; a user without those permissions: 403.
"""

from __future__ import annotations

from urllib.parse import urlparse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_asset, requires_access_dag
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ml_cache.ui.gather import gather_page, gather_published
from ml_cache.ui.paths import PUBLISHED_CARD
from ml_cache.ui.render import render_page, render_published_card
from ml_cache.ui.view_model import BUILD_DAG_ID, JANITOR_DAG_ID, ROLLOUT_DAG_ID

REQUIRED_ACCESS = [
    Depends(requires_access_asset("GET")),
    Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=BUILD_DAG_ID)),
    Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=ROLLOUT_DAG_ID)),
    Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=JANITOR_DAG_ID)),
    Depends(requires_access_dag("GET", DagAccessEntity.XCOM, param_dag_id=JANITOR_DAG_ID)),
]


def _ui_base() -> str:
    """The UI's path (api.base_url may put Airflow under a sub-path), for links to runs."""
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="/") or "/").path or "/"


def create_app() -> FastAPI:
    app = FastAPI(title="ML cache", dependencies=REQUIRED_ACCESS, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page(session: SessionDep) -> HTMLResponse:
        """The page, for the UI's iframe."""
        return HTMLResponse(render_page(gather_page(session), ui_base=_ui_base()))

    @app.get(PUBLISHED_CARD)
    def published_card(session: SessionDep) -> Response:
        """The published image set as an image, for the build's trigger form (fetched when the form opens)."""
        page = gather_published(session)
        return Response(render_published_card(page), media_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/page")
    def page_data(session: SessionDep) -> JSONResponse:
        """The same view model as JSON."""
        return JSONResponse(gather_page(session).to_dict())

    return app
