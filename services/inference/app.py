"""The inference API: `create_app(settings, instance_id=...)` builds a FastAPI app that serves the pinned model.

Routes (services/inference/routes/): POST /predict, POST /predict/batch, POST /feedback, /feedback/batch, GET /health,
/ready, /model, /lineage/{request_id}, /metrics, and /docs with the OpenAPI document FastAPI builds from
the routes' declarations (body models, response models, documented refusals).
The lifespan is the Service's (service.py): it opens this instance's logs, loads the pinned version
(sha256 checked, no external data, no pickle) and starts the config watcher that hot-swaps it (holder.py).

Every route is a routing.DirectRoute: it answers refusals (BadRequest) as a JSON error naming the field and
the reason, and counts every answer in the metrics. Anything unexpected is a JSON 500 (and a bug to fix),
logged here with the instance id. Starlette's own refusals keep their headers (a 405 carries `Allow`).

The API key (`api_key`, by default `shared.config.api_key_from_env()`: $CLOCKWORK_API_KEY or the file named
by $CLOCKWORK_API_KEY_FILE) guards POST /feedback and GET /lineage/{request_id}, and /predict* too when
`security.predict_requires_key`; without a key they are open. The document declares the key's two schemes
(header X-API-Key, HTTP Bearer) and, on each keyed operation, its `security` and 401: the document is what
this deployment does. docs/CONTRACTS.md ("HTTP API") says why each status is what it is.
"""

from __future__ import annotations

import logging
from typing import cast

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.inference.docs_pages import add_docs
from services.inference.routes import all_routes
from services.inference.routing import SECURITY_SCHEMES, JSONBytes
from services.inference.service import Service
from shared.config import Settings, api_key_from_env
from shared.dataset import DatasetConfig

log = logging.getLogger(__name__)


def description(dataset: DatasetConfig) -> str:
    """The document's description, from the dataset section (its name, attribution and one column's names)."""
    col = dataset.features[-1]
    source = f" ({dataset.attribution})" if dataset.attribution else ""
    return (
        f"Failure probability from one reading of the `{dataset.name}` data set{source}. "
        f"Fields are accepted by name (`{col.name}`), by the data set's column names (`{col.source}`) or by "
        "their aliases; each field states its unit and range, or its levels. "
        "Every prediction and every label is logged on the volume for the monitor."
    )


_UNSET = object()


def _error(detail: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(orjson.dumps({"detail": detail, "errors": []}), status, headers=headers)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's own refusals (unknown path, wrong method with its `Allow`) in the service's error shape."""
    return _error(str(exc.detail), exc.status_code, dict(exc.headers) if exc.headers else None)


async def unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback, answered as a JSON 500 (the route has counted it)."""
    instance_id = request.app.state.service.instance_id
    log.exception("%s: unexpected error on %s %s", instance_id, request.method, request.url.path)
    return _error(f"internal error ({type(exc).__name__}); see the service log", 500)


def create_app(settings: Settings, *, instance_id: str | None = None, api_key: str | None | object = _UNSET) -> FastAPI:
    """The inference app for `settings`; nothing is loaded until the lifespan starts.
    `api_key`: None runs without a key; left out, it is read from the environment (api_key_from_env)."""
    key = api_key_from_env() if api_key is _UNSET else cast("str | None", api_key)
    svc = Service(settings, instance_id=instance_id)
    app = FastAPI(
        title="Clockwork inference",
        version="1",
        description=description(settings.dataset),
        lifespan=svc.lifespan,
        exception_handlers={StarletteHTTPException: http_error, Exception: unexpected},
        docs_url=None,  # served below with local assets: no CDN
        redoc_url=None,
    )
    add_docs(app)
    app.state.service = svc
    app.router.routes.extend(all_routes(svc, key=key))
    if key is not None:
        _declare_security(app)
    return app


def _declare_security(app: FastAPI) -> None:
    """Add the key's schemes to the generated document (the operations name them in their `security`)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
