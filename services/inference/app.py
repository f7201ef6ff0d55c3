"""The inference API: `create_app(settings, instance_id=...)` builds a FastAPI app that serves the pinned model.

Routes: POST /predict, POST /predict/batch, POST /feedback, GET /health, /ready, /model, /metrics, /docs.
The lifespan opens this instance's logs, loads the pinned version (sha256 checked, no external data,
no pickle) and starts the config watcher that hot-swaps it (see holder.py).

The hot routes are `async def` endpoints on the event loop with no thread hop and no FastAPI
dependency machinery (routing.DirectRoute): read the body with a size cap, validate it with pydantic's
JSON parser, read the holder once, predict (single rows waiting together run as one ONNX call, see
predictor.py), log the record, answer with orjson. Bad input is a 4xx naming the field and the reason;
anything unexpected is still a JSON 500 (and a bug to fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.inference import schemas
from services.inference.holder import ConfigWatcher, ModelHolder
from services.inference.logs import LINE_OPTS, RecordLog, RequestIds, UtcClock, check_instance_id, default_instance_id
from services.inference.metrics import NO_MODEL, Metrics
from services.inference.predictor import Predictor
from services.inference.routing import DirectRoute, JSONBytes, read_body
from services.inference.schemas import BadRequest, explain
from shared.config import Settings
from shared.errors import ClockworkError, NotFoundError
from shared.features import NUMERIC_FEATURES, RAW_COLUMNS, TYPE_CODES
from shared.lineage import lineage_json
from shared.paths import Paths
from shared.schemas import MESSAGE_ID_RE as REQUEST_ID_RE

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "Malformed JSON"},
    413: {"model": schemas.ErrorBody, "description": "Body or batch over the configured limit"},
    422: {
        "model": schemas.ErrorBody,
        "description": "A field is missing, of the wrong type, not finite or out of range",
    },
    503: {"model": schemas.ErrorBody, "description": "No model is loaded yet"},
}


def _json(data: Any, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(data), status)


class Service:
    """Everything one app instance holds: settings, logs, metrics, the model holder and the watcher."""

    def __init__(self, settings: Settings, *, instance_id: str | None = None) -> None:
        self.settings = settings
        self.paths = Paths.from_settings(settings)
        self.instance_id = check_instance_id(instance_id) if instance_id else default_instance_id()
        dep = settings.deployment
        self.threshold = dep.threshold
        self.max_body = dep.max_body_bytes
        self.Reading = schemas.reading_model(dep.input_ranges)
        self.Batch = schemas.batch_model(self.Reading, dep.max_batch_rows)
        self.metrics = Metrics()
        self.holder = ModelHolder(paths=self.paths, metrics=self.metrics, instance_id=self.instance_id)
        self.watcher = ConfigWatcher(settings=settings, holder=self.holder)
        self.ids = RequestIds()
        self.clock = UtcClock()
        self.predictor = Predictor(
            threshold=self.threshold,
            ids=self.ids,
            clock=self.clock,
            metrics=self.metrics,
            coalesce=dep.coalesce.enabled,
            max_rows=dep.coalesce.max_rows,
            max_open_iterations=dep.coalesce.max_open_iterations,
        )
        self.predictions: RecordLog | None = None
        self.feedback: RecordLog | None = None
        self._task: asyncio.Task | None = None

    @property
    def prediction_log_path(self):
        return self.paths.prediction_log(self.instance_id)

    @property
    def feedback_log_path(self):
        return self.paths.feedback_log(self.instance_id)

    async def start(self) -> None:
        self.predictions = self.predictor.log = RecordLog(self.prediction_log_path)
        self.predictor.loop = asyncio.get_running_loop()
        self.feedback = RecordLog(self.feedback_log_path)
        self.watcher.prime()
        log.info(
            "instance %s: prediction log %s, feedback log %s",
            self.instance_id,
            self.prediction_log_path,
            self.feedback_log_path,
        )
        await self.holder.load(self.settings.deployment.model_version, reason="start")
        self._task = asyncio.create_task(self.watcher.run(), name=f"config-watcher-{self.instance_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for f in (self.predictions, self.feedback):
            if f is not None:
                f.close()


def create_app(settings: Settings, *, instance_id: str | None = None) -> FastAPI:
    """The inference app for `settings`; nothing is loaded until the lifespan starts."""
    svc = Service(settings, instance_id=instance_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(
        title="Clockwork inference",
        version="1",
        description=(
            "Failure probability of a milling machine from one sensor reading (UCI AI4I 2020). "
            "Fields are accepted as snake_case (`torque_nm`) or as the data set's column names (`Torque [Nm]`). "
            "Every prediction and every label is logged on the volume for the monitor."
        ),
        lifespan=lifespan,
    )
    app.state.service = svc
    holder = svc.holder
    metrics = svc.metrics
    threshold = svc.threshold
    Reading, Batch = svc.Reading, svc.Batch
    clock = svc.clock
    submit, record = svc.predictor.submit, svc.predictor.record
    codes = TYPE_CODES
    air, proc, speed, torque, wear = NUMERIC_FEATURES

    def refuse(route: str, err: BadRequest) -> Response:
        current = holder.current
        metrics.error(route, err.status, current.version if current else NO_MODEL)
        return _json(err.body(), err.status)

    def not_ready(route: str) -> Response:
        metrics.error(route, 503, NO_MODEL)
        return _json({"detail": f"no model is loaded: {holder.detail()}", "errors": []}, 503)

    # --- POST /predict -----------------------------------------------------------------------
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        try:
            r = Reading.model_validate_json(await read_body(request, svc.max_body))
        except ValidationError as e:
            return refuse("/predict", explain(e))
        except BadRequest as e:
            return refuse("/predict", e)
        m = holder.current  # read once: this request is answered by exactly this version
        if m is None:
            return not_ready("/predict")
        values = r.__dict__
        request_id, probability, label = await submit(
            m, (codes[values["type"]], values[air], values[proc], values[speed], values[torque], values[wear]), values
        )
        body = orjson.dumps(
            {
                "request_id": request_id,
                "model_version": m.version,
                "failure_probability": probability,
                "prediction": label,
                "threshold": threshold,
            }
        )
        m.predict_route.observe(time.perf_counter() - started)
        return JSONBytes(body)

    # --- POST /predict/batch -----------------------------------------------------------------
    async def predict_batch(request: Request) -> Response:
        started = time.perf_counter()
        try:
            batch = Batch.model_validate_json(await read_body(request, svc.max_body))
        except ValidationError as e:
            return refuse("/predict/batch", explain(e))
        except BadRequest as e:
            return refuse("/predict/batch", e)
        m = holder.current
        if m is None:
            return not_ready("/predict/batch")
        rows = [r.__dict__ for r in batch.readings]
        x = np.array(
            [(codes[v["type"]], v[air], v[proc], v[speed], v[torque], v[wear]) for v in rows], dtype=np.float32
        )
        results = record(m, rows, m.predict_many(x).tolist(), route=m.batch_route)
        body = orjson.dumps(
            {
                "model_version": m.version,
                "threshold": threshold,
                "predictions": [
                    {"request_id": rid, "failure_probability": p, "prediction": label} for rid, p, label in results
                ],
            }
        )
        m.batch_route.observe(time.perf_counter() - started)
        return JSONBytes(body)

    # --- POST /feedback ------------------------------------------------------------------------
    async def feedback(request: Request) -> Response:
        try:
            fb = schemas.Feedback.model_validate_json(await read_body(request, svc.max_body))
        except ValidationError as e:
            return refuse("/feedback", explain(e))
        except BadRequest as e:
            return refuse("/feedback", e)
        svc.feedback.write(
            orjson.dumps({"time": clock.now(), "request_id": fb.request_id, "label": fb.label}, option=LINE_OPTS)
        )
        current = holder.current
        metrics.count("/feedback", 200, current.version if current else NO_MODEL)
        return _json({"request_id": fb.request_id, "label": fb.label, "recorded": True})

    router = app.router
    router.routes.append(
        DirectRoute(
            "/predict",
            predict,
            methods=["POST"],
            body_schema="Reading",
            response_model=schemas.Prediction,
            responses=ERROR_RESPONSES,
            summary="Failure probability of one reading",
            tags=["predict"],
            description="One reading in, the failure probability, the predicted label (probability >= threshold), "
            "the model version and a request_id out. The prediction is logged before the answer.",
        )
    )
    router.routes.append(
        DirectRoute(
            "/predict/batch",
            predict_batch,
            methods=["POST"],
            body_schema="BatchRequest",
            response_model=schemas.BatchPrediction,
            responses=ERROR_RESPONSES,
            summary="Failure probabilities of many readings",
            tags=["predict"],
            description=f"Up to {settings.deployment.max_batch_rows} readings; each row gets its own request_id and log record.",
        )
    )
    router.routes.append(
        DirectRoute(
            "/feedback",
            feedback,
            methods=["POST"],
            body_schema="Feedback",
            response_model=schemas.FeedbackAccepted,
            responses={k: v for k, v in ERROR_RESPONSES.items() if k != 503},
            summary="The true outcome of an earlier prediction",
            tags=["feedback"],
        )
    )

    # --- GET routes ----------------------------------------------------------------------------
    def count(route: str, status: int) -> None:
        current = holder.current
        metrics.count(route, status, current.version if current else NO_MODEL)

    @app.get("/health", response_model=schemas.Health, tags=["ops"], summary="The process is alive")
    async def health() -> Response:
        count("/health", 200)
        return _json({"status": "ok", "instance_id": svc.instance_id})

    @app.get(
        "/ready",
        response_model=schemas.Ready,
        tags=["ops"],
        summary="A checked model is loaded",
        responses={503: {"model": schemas.Ready, "description": "No model loaded"}},
    )
    async def ready() -> Response:
        current = holder.current
        ok = current is not None
        count("/ready", 200 if ok else 503)
        return _json(
            {
                "ready": ok,
                "model_version": current.version if current else None,
                "pinned_version": holder.pinned,
                "detail": holder.detail(),
                "last_swap_failure": holder.last_failure,
                "config_error": holder.config_error,
            },
            200 if ok else 503,
        )

    @app.get(
        "/model",
        response_model=schemas.ModelInfo,
        tags=["ops"],
        summary="The serving version and its metadata",
        responses={503: {"model": schemas.ErrorBody, "description": "No model loaded"}},
    )
    async def model_info() -> Response:
        current = holder.current
        if current is None:
            return not_ready("/model")
        count("/model", 200)
        return _json(
            {
                "model_version": current.version,
                "onnx_sha256": current.onnx_sha256,
                "loaded_at": current.loaded_at,
                "threshold": threshold,
                "input_columns": RAW_COLUMNS,
                "metadata": current.metadata,
            }
        )

    @app.get(
        "/lineage/{request_id}",
        tags=["audit"],
        response_class=Response,
        summary="From a prediction to its model, metrics, data version, manifest entries, raw file and commit",
        responses={
            200: {"description": "The lineage chain (as `python -m services.monitor lineage` prints it)"},
            404: {"model": schemas.ErrorBody, "description": "No prediction with this request_id"},
            422: {"model": schemas.ErrorBody, "description": "Not a request_id"},
            503: {"model": schemas.ErrorBody, "description": "A file on the audit trail is damaged"},
        },
    )
    async def lineage_route(request_id: str) -> Response:
        if not REQUEST_ID_RE.match(request_id):
            count("/lineage", 422)
            return _json(
                {
                    "detail": f"request_id: {request_id[:80]!r} is not a request id (letters, digits, _.:- ; 1-128)",
                    "errors": [{"field": "request_id", "reason": "invalid request id", "type": "value_error"}],
                },
                422,
            )
        try:
            # The scan reads the logs: run it off the event loop so /predict never waits for it.
            text = await asyncio.to_thread(lineage_json, svc.paths, request_id)
        except NotFoundError as e:
            count("/lineage", 404)
            return _json({"detail": str(e), "errors": []}, 404)
        except ClockworkError as e:
            count("/lineage", 503)
            return _json({"detail": f"lineage unavailable: {e}", "errors": []}, 503)
        count("/lineage", 200)
        return Response(text, media_type="application/json")

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}
        },
    )
    async def prometheus() -> Response:
        data, content_type = metrics.exposition()
        return Response(data, media_type=content_type)

    # --- errors --------------------------------------------------------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"detail": str(exc.detail), "errors": []}, exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s: unexpected error on %s %s", svc.instance_id, request.method, request.url.path)
        metrics.error(request.url.path, 500, holder.current.version if holder.current else NO_MODEL)
        return _json({"detail": f"internal error ({type(exc).__name__}); see the service log", "errors": []}, 500)

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            ref = "#/components/schemas/{model}"
            for name, model in (("Reading", Reading), ("BatchRequest", Batch), ("Feedback", schemas.Feedback)):
                schema = model.model_json_schema(ref_template=ref)
                components.update(schema.pop("$defs", {}))
                components[name] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
