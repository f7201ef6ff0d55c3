"""The routes of the inference API, one module per area; each `routes(svc)` builds its DirectRoutes.

predict.py   POST /predict, POST /predict/batch (the hot path)
feedback.py  POST /feedback
ops.py       GET /health, /ready, /model, /lineage/{request_id}, /metrics
"""

from __future__ import annotations

from services.inference.routes import feedback, ops, predict
from services.inference.routing import DirectRoute
from services.inference.service import Service


def all_routes(svc: Service) -> list[DirectRoute]:
    return [*predict.routes(svc), *feedback.routes(svc), *ops.routes(svc)]
