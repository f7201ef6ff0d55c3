"""GET /health, /ready, /model, /lineage/{request_id}, /metrics: what operators and auditors ask.

/metrics is the only route not counted in the request metrics (a scrape is not traffic).
A lineage lookup catches the lineage index up with what was appended to the logs, then reads the request's lines
(shared/lineage_index.py): not in the serving process but in a child (services/inference/lineage_worker.py), at
most `security.lineage_concurrency` at once with `security.lineage_waiting` more queued behind them, each holding
its slot at least `security.lineage_min_interval_s` (a rate bound: concurrency / interval lookups a second); any
more is a fast 429 with Retry-After, so that clients looping on the audit route cannot starve /predict. It reads
the audit trail: keyed when a key is set.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import orjson
from fastapi import Path
from starlette.requests import Request
from starlette.responses import Response

from services.inference import schemas
from services.inference.routing import DirectRoute, JSONBytes
from services.inference.schemas import BadRequest
from services.inference.service import Service
from shared.schemas import MESSAGE_ID_RE as REQUEST_ID_RE

RequestId = Annotated[
    str, Path(pattern=schemas.REQUEST_ID_PATTERN, description="request_id of a prediction (letters, digits, _.:-)")
]


class Bounded:
    """At most `running` callers inside at once, `waiting` more queued; beyond that `busy()` refuses."""

    def __init__(self, *, running: int, waiting: int, retry_after_s: int, min_interval_s: float) -> None:
        self.slots = asyncio.Semaphore(running)
        self.limit = running + waiting
        self.inside = 0
        self.retry_after = str(retry_after_s)
        self.min_interval_s = min_interval_s

    async def pace(self, started: float) -> None:
        """Hold the slot until `min_interval_s` after `started`: lookups are rate-bounded, loopers wait, not spin."""
        left = started + self.min_interval_s - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)

    def busy(self) -> BadRequest:
        return BadRequest(
            429,
            f"lineage: {self.inside} lookups running or waiting, the most allowed (security.lineage_concurrency + "
            f"security.lineage_waiting); retry after {self.retry_after}s",
            headers={"Retry-After": self.retry_after},
        )


def routes(svc: Service, *, key: str | None = None) -> list[DirectRoute]:
    holder = svc.holder
    input_columns = svc.reading.names
    sec = svc.settings.security
    lookups = Bounded(
        running=sec.lineage_concurrency,
        waiting=sec.lineage_waiting,
        retry_after_s=sec.lineage_retry_after_s,
        min_interval_s=sec.lineage_min_interval_s,
    )

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
            "threshold": current.threshold,
            "instance_id": svc.instance_id,
            "input_columns": input_columns,
            "metadata": current.metadata,
            "shadow": holder.shadow_info(),
        }
        return JSONBytes(orjson.dumps(body))

    async def lineage_route(request: Request, request_id: RequestId) -> Response:
        if not REQUEST_ID_RE.match(request_id):
            raise BadRequest(
                422,
                f"request_id: {request_id[:80]!r} is not a request id (letters, digits, _.:- ; 1-128)",
                [{"field": "request_id", "reason": "invalid request id", "type": "value_error"}],
            )
        if lookups.inside >= lookups.limit:
            raise lookups.busy()
        lookups.inside += 1
        try:
            async with lookups.slots:
                started = time.monotonic()
                try:
                    found = await svc.lineage.lookup(request_id)
                finally:
                    await lookups.pace(started)
        finally:
            lookups.inside -= 1
        if found.status != 200:
            raise BadRequest(found.status, found.text)
        return Response(found.text, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        data, content_type = svc.metrics.exposition()
        return Response(data, media_type=content_type)

    ops, no_model = ["ops"], schemas.NO_MODEL
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
            key=key,
            tags=["audit"],
            response_class=Response,
            summary="From a prediction to its model, metrics, data version, manifest entries, raw file and commit",
            responses={
                200: {"description": "The lineage chain (as `python -m services.monitor lineage` prints it)"},
                404: {"model": schemas.ErrorBody, "description": "No prediction with this request_id"},
                422: {"model": schemas.ErrorBody, "description": "Not a request_id"},
                **schemas.BUSY,
                503: {"model": schemas.ErrorBody, "description": "A damaged audit-trail file, or the lookup failed"},
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
