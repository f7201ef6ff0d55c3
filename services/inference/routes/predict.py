"""POST /predict and POST /predict/batch: the hot path.

`async def` endpoints on the event loop with no thread hop and no FastAPI dependency machinery
(routing.DirectRoute): parse the body (capped read, pydantic's JSON parser, the Reading model built from the
dataset section), read the serving model once, encode the reading (reading.py: the features in order, a
categorical as its level's index; the log keeps the values, keyed by feature name), predict (single rows
waiting together run as one ONNX call, see predictor.py), log the record (before the answer; with the live
shadow's answer when deployment.shadow_version is set, never in the response), answer with orjson. The answer
carries the model's RouteMetrics, where the route records it and its handler time.
Refusals are raised (BadRequest) and answered by the route.
"""

from __future__ import annotations

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.inference import schemas
from services.inference.routing import BodyDeadlines, DirectRoute, JSONBytes, parse
from services.inference.service import Service


def routes(svc: Service, *, key: str | None = None) -> list[DirectRoute]:
    Reading, Batch, limit = svc.Reading, svc.Batch, svc.max_body
    deadlines = BodyDeadlines(svc.settings.security.body_read_timeout_s)
    model = svc.model
    submit, record = svc.predictor.submit, svc.predictor.record
    encode, accepted = svc.reading.encode, svc.reading.accepted  # made once from the dataset section

    async def predict(request: Request) -> Response:
        values = (await parse(request, Reading, limit, deadlines, accepted=accepted)).__dict__
        m = model()  # read once: this request is answered by exactly this version
        request_id, probability, label = await submit(m, encode(values), values)
        body = {
            "request_id": request_id,
            "model_version": m.version,
            "failure_probability": probability,
            "prediction": label,
            "threshold": m.threshold,
        }
        return JSONBytes(orjson.dumps(body), 200, m.predict_route)

    async def predict_batch(request: Request) -> Response:
        batch = await parse(request, Batch, limit, deadlines, accepted=accepted)
        m = model()
        rows = [r.__dict__ for r in batch.readings]  # type: ignore[attr-defined] # a model built from config
        x = np.array([encode(v) for v in rows], dtype=np.float32)
        results = record(m, rows, m.predict_many(x).tolist(), route=m.batch_route, rows=x)
        body = {
            "model_version": m.version,
            "threshold": m.threshold,
            "predictions": [
                {"request_id": rid, "failure_probability": p, "prediction": label} for rid, p, label in results
            ],
        }
        return JSONBytes(orjson.dumps(body), 200, m.batch_route)

    return [
        DirectRoute(
            "/predict",
            predict,
            methods=["POST"],
            body=Reading,
            count=svc.count,
            key=key,
            response_model=schemas.Prediction,
            responses={**schemas.BODY_RESPONSES, **schemas.NO_MODEL},
            summary="Failure probability of one reading",
            tags=["predict"],
            description="One reading in, the failure probability, the predicted label (probability >= threshold), "
            "the model version and a request_id out. The prediction is logged before the answer.",
        ),
        DirectRoute(
            "/predict/batch",
            predict_batch,
            methods=["POST"],
            body=Batch,
            count=svc.count,
            key=key,
            response_model=schemas.BatchPrediction,
            responses={**schemas.BODY_RESPONSES, **schemas.NO_MODEL},
            summary="Failure probabilities of many readings",
            tags=["predict"],
            description=f"Up to {svc.settings.deployment.max_batch_rows} readings (deployment.max_batch_rows); "
            "each row gets its own request_id and log record. More readings than that is a 422 like any other "
            "violation of this schema (its maxItems); 413 is only for a body over deployment.max_body_bytes.",
        ),
    ]
