"""GET /health, /ready, /model, /lineage/{request_id}, /metrics: what operators and auditors ask.

/metrics is the only route not counted in the request metrics (a scrape is not traffic).
The lineage scan reads the logs: it runs in a worker thread so /predict never waits for it.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.inference import schemas
from services.inference.routing import DirectRoute, JSONBytes
from services.inference.schemas import BadRequest
from services.inference.service import Service
from shared.errors import ClockworkError, NotFoundError
from shared.features import RAW_COLUMNS
from shared.lineage import lineage_json
from shared.schemas import MESSAGE_ID_RE as REQUEST_ID_RE


def routes(svc: Service) -> list[DirectRoute]:
    holder = svc.holder

    async def health(request: Request) -> Response:
        return JSONBytes(orjson.dumps({"status": "ok", "instance_id": svc.instance_id}))

    async def ready(request: Request) -> Response:
        current = holder.current
        ok, detail = svc.readiness()  # a model, writable logs, not draining
        body = {
            "ready": ok,
            "model_version": current.version if current else None,
            "pinned_version": holder.pinned,
            "detail": detail,
            "last_swap_failure": holder.last_failure,
            "config_error": holder.config_error,
        }
        return JSONBytes(orjson.dumps(body), 200 if ok else 503)

    async def model_info(request: Request) -> Response:
        current = svc.model()
        body = {
            "model_version": current.version,
            "onnx_sha256": current.onnx_sha256,
            "loaded_at": current.loaded_at,
            "threshold": svc.threshold,
            "input_columns": RAW_COLUMNS,
            "metadata": current.metadata,
        }
        return JSONBytes(orjson.dumps(body))

    async def lineage_route(request: Request, request_id: str) -> Response:
        if not REQUEST_ID_RE.match(request_id):
            raise BadRequest(
                422,
                f"request_id: {request_id[:80]!r} is not a request id (letters, digits, _.:- ; 1-128)",
                [{"field": "request_id", "reason": "invalid request id", "type": "value_error"}],
            )
        try:
            text = await asyncio.to_thread(lineage_json, svc.paths, request_id)
        except NotFoundError as e:
            raise BadRequest(404, str(e)) from e
        except ClockworkError as e:
            raise BadRequest(503, f"lineage unavailable: {e}") from e
        return Response(text, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        data, content_type = svc.metrics.exposition()
        return Response(data, media_type=content_type)

    ops, no_model = ["ops"], {503: {"model": schemas.ErrorBody, "description": "No model loaded"}}
    return [
        DirectRoute(
            "/health", health, count=svc.count, response_model=schemas.Health, tags=ops, summary="The process is alive"
        ),
        DirectRoute(
            "/ready",
            ready,
            count=svc.count,
            response_model=schemas.Ready,
            tags=ops,
            summary="A checked model is loaded",
            responses={503: {"model": schemas.Ready, "description": "No model loaded"}},
        ),
        DirectRoute(
            "/model",
            model_info,
            count=svc.count,
            response_model=schemas.ModelInfo,
            tags=ops,
            summary="The serving version and its metadata",
            responses=no_model,
        ),
        DirectRoute(
            "/lineage/{request_id}",
            lineage_route,
            count=svc.count,
            tags=["audit"],
            response_class=Response,
            summary="From a prediction to its model, metrics, data version, manifest entries, raw file and commit",
            responses={
                200: {"description": "The lineage chain (as `python -m services.monitor lineage` prints it)"},
                404: {"model": schemas.ErrorBody, "description": "No prediction with this request_id"},
                422: {"model": schemas.ErrorBody, "description": "Not a request_id"},
                503: {"model": schemas.ErrorBody, "description": "A file on the audit trail is damaged"},
            },
        ),
        DirectRoute(
            "/metrics",
            prometheus,
            tags=ops,
            summary="Prometheus metrics",
            response_class=Response,
            responses={
                200: {
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                    "description": "Prometheus text format",
                }
            },
        ),
    ]
