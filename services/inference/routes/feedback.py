"""POST /feedback: the true outcome of an earlier prediction, one line in this instance's feedback log."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from services.inference import schemas
from services.inference.routing import DirectRoute, JSONBytes, parse
from services.inference.service import Service


def routes(svc: Service) -> list[DirectRoute]:
    limit, clock = svc.max_body, svc.clock

    async def feedback(request: Request) -> Response:
        fb = await parse(request, schemas.Feedback, limit)
        svc.feedback.append(clock.now(), fb.request_id, fb.label)
        return JSONBytes(orjson.dumps({"request_id": fb.request_id, "label": fb.label, "recorded": True}))

    return [
        DirectRoute(
            "/feedback",
            feedback,
            methods=["POST"],
            body=schemas.Feedback,
            count=svc.count,
            response_model=schemas.FeedbackAccepted,
            responses={k: v for k, v in schemas.ERROR_RESPONSES.items() if k != 503},
            summary="The true outcome of an earlier prediction",
            tags=["feedback"],
        )
    ]
