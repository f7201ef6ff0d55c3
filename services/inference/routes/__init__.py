"""The routes of the inference API, one module per area; each `routes(svc)` builds its DirectRoutes.

predict.py   POST /predict, POST /predict/batch (the hot path)
feedback.py  POST /feedback, POST /feedback/batch (keyed when a key is set)
ops.py       GET /health, /ready, /model, /lineage/{request_id} (keyed; bounded lookups), /metrics
"""

from __future__ import annotations

from services.inference.routes import feedback, ops, predict
from services.inference.routing import DirectRoute
from services.inference.service import Service


def all_routes(svc: Service, *, key: str | None = None) -> list[DirectRoute]:
    """Every route; with `key`, what changes state or reads the audit trail requires it (and /predict* too when
    security.predict_requires_key)."""
    predict_key = key if svc.settings.security.predict_requires_key else None
    return [*predict.routes(svc, key=predict_key), *feedback.routes(svc, key=key), *ops.routes(svc, key=key)]
