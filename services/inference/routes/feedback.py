"""POST /feedback and POST /feedback/batch: true outcomes of earlier predictions, lines in this instance's
feedback log.

/feedback takes one label; /feedback/batch takes up to deployment.max_feedback_rows (a plant's system sending
labels in bulk), each validated as /feedback validates one (a single bad item refuses the whole body, 422
naming it, nothing logged), all written in one append: every label is in the log or none is (503 if the log
cannot take them). Both change what the monitor and the retrain gate see, so both require the API key when one
is set."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.inference import schemas
from services.inference.routing import BodyDeadlines, DirectRoute, JSONBytes, parse
from services.inference.service import Service

NOT_KNOWN_HERE = (
    "the request_id need not be known to this instance (labels may arrive at any replica, or before the log "
    "that holds the prediction is read)."
)


def routes(svc: Service, *, key: str | None = None) -> list[DirectRoute]:
    limit, clock = svc.max_body, svc.clock
    deadlines = BodyDeadlines(svc.settings.security.body_read_timeout_s)
    Batch = svc.FeedbackBatch
    max_rows = svc.settings.deployment.max_feedback_rows

    async def feedback(request: Request) -> Response:
        fb = await parse(request, schemas.Feedback, limit, deadlines)
        svc.feedback.append(clock.now(), fb.request_id, fb.label)
        return JSONBytes(orjson.dumps({"request_id": fb.request_id, "label": fb.label, "recorded": True}))

    async def feedback_batch(request: Request) -> Response:
        body = await parse(request, Batch, limit, deadlines)
        labels = [(fb.request_id, fb.label) for fb in body.labels]  # type: ignore[attr-defined]
        svc.feedback.append_many(clock.now(), labels)
        return JSONBytes(orjson.dumps({"recorded": len(labels)}))

    responses = {**schemas.BODY_RESPONSES, **schemas.LOG_UNAVAILABLE}
    return [
        DirectRoute(
            "/feedback",
            feedback,
            methods=["POST"],
            body=schemas.Feedback,
            count=svc.count,
            key=key,
            response_model=schemas.FeedbackAccepted,
            responses=responses,
            summary="The true outcome of an earlier prediction",
            description="`label` is the JSON number 0 or 1 (1.0 counts as 1, as JSON Schema's `integer` says); "
            + NOT_KNOWN_HERE,
            tags=["feedback"],
        ),
        DirectRoute(
            "/feedback/batch",
            feedback_batch,
            methods=["POST"],
            body=Batch,
            count=svc.count,
            key=key,
            response_model=schemas.FeedbackBatchAccepted,
            responses=responses,
            summary="True outcomes of earlier predictions, in bulk",
            description=f"Up to {max_rows} labels (deployment.max_feedback_rows), each as POST /feedback takes "
            "one; one bad item refuses the whole body (422 naming it) and nothing is logged; otherwise every "
            "label is logged in one write and `recorded` says how many. " + NOT_KNOWN_HERE,
            tags=["feedback"],
        ),
    ]
