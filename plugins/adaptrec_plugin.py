"""AdaptRec in the Airflow UI: an "MLflow run" link on the training and registry tasks, and a registry page.

Airflow imports this file in every component, each task process included, so at import time it
loads only Airflow's plugin classes and AdaptRec's constants. MLflow, FastAPI and Airflow's API
security are imported when the page, its app or a link is first used, which happens in the API server.
"""

import logging
from functools import cached_property

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from recsys_tasks.constants import DAG_ID

log = logging.getLogger(__name__)

URL_PREFIX = "/adaptrec"
TASKS_WITH_MLFLOW_LINK = frozenset({"pretrain", "finetune", "adapt", "evaluate", "register", "promote"})


class MlflowRunLink(BaseOperatorLink):
    """Opens the MLflow run that every stage of one Airflow run logs to."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        # A global link is offered on every task of every DAG; an empty URL hides it.
        if ti_key.dag_id != DAG_ID or ti_key.task_id not in TASKS_WITH_MLFLOW_LINK:
            return ""
        from recsys_tasks.errors import RegistryError
        from recsys_tasks.registry.dashboard import mlflow_run_url
        from recsys_tasks.settings import get_settings

        try:
            return mlflow_run_url(get_settings(), ti_key.run_id)
        except RegistryError as exc:
            log.warning("no MLflow link for %s of %s: %s", ti_key.task_id, ti_key.run_id, exc)
            return ""


def registry_app():
    """The FastAPI app behind the registry page: HTML at ``/``, the same data as JSON at ``/api/versions``."""
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    from recsys_tasks.errors import RegistryError
    from recsys_tasks.registry import dashboard
    from recsys_tasks.settings import get_settings

    # Airflow does not authenticate plugin apps: whoever may read the DAG may read its registry.
    app = FastAPI(title="AdaptRec registry", dependencies=[Depends(requires_access_dag("GET", param_dag_id=DAG_ID))])

    @app.get("/", response_class=HTMLResponse)
    def registry_page() -> HTMLResponse:
        settings = get_settings()
        try:
            overview = dashboard.registry_overview(settings)
        except RegistryError as exc:
            return HTMLResponse(dashboard.render_error_page(str(exc)), status_code=503)
        return HTMLResponse(dashboard.render_page(settings.model_name, overview, settings.mlflow_ui_url))

    @app.get("/api/versions")
    def registry_versions() -> JSONResponse:
        settings = get_settings()
        try:
            overview = dashboard.registry_overview(settings)
        except RegistryError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        if overview is None:
            return JSONResponse({"detail": f"no version of {settings.model_name} is registered yet"}, status_code=404)
        return JSONResponse(overview.model_dump(mode="json"))

    return app


class AdaptRecPlugin(AirflowPlugin):
    name = "adaptrec"
    global_operator_extra_links = [MlflowRunLink()]
    external_views = [
        {
            "name": "AdaptRec registry",
            "href": f"{URL_PREFIX}/",
            "url_route": "adaptrec-registry",
            "destination": "nav",
            "category": "browse",
        }
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict]:
        # Only the API server reads this attribute, so only it builds the app (see the module docstring).
        return [{"app": registry_app(), "url_prefix": URL_PREFIX, "name": "AdaptRec registry"}]
