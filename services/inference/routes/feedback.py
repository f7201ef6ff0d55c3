"""POST /feedback: the true outcome of an earlier prediction, one line in this instance's feedback log.

It changes what the monitor and the retrain gate see, so it requires the API key when one is set."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.inference import schemas
from services.inference.routing import BodyDeadlines, DirectRoute, JSONBytes, parse
from services.inference.service import Service


def routes(svc: Service, *, key: str | None = None) -> list[DirectRoute]:
    limit, clock = svc.max_body, svc.clock
    deadlines = BodyDeadlines(svc.settings.security.body_read_timeout_s)

    async def feedback(request: Request) -> Response:
        fb = await parse(request, schemas.Feedback, limit, deadlines)
        svc.feedback.append(clock.now(), fb.request_id, fb.label)
        return JSONBytes(orjson.dumps({"request_id": fb.request_id, "label": fb.label, "recorded": True}))

    return [
        DirectRoute(
            "/feedback",
            feedback,
            methods=["POST"],
            body=schemas.Feedback,
            count=svc.count,
            key=key,
            response_model=schemas.FeedbackAccepted,
            responses=schemas.BODY_RESPONSES,
            summary="The true outcome of an earlier prediction",
            description="`label` is the JSON number 0 or 1 (1.0 counts as 1, as JSON Schema's `integer` says); the "
            "request_id need not be known to this instance (labels may arrive at any replica, or before the log "
            "that holds the prediction is read).",
            tags=["feedback"],
        )
    ]
