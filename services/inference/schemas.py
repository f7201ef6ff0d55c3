"""HTTP bodies of the inference service and how a bad one is explained.

The reading model is built per app from the `dataset:` section (reading.py): a feature is accepted under its
name, its raw header and its aliases; numbers are strict (no strings, no booleans), finite (NaN and Infinity,
JSON literals included, are refused) and inside the declared range; a categorical is one of its levels.
A feedback label is the JSON number 0 or 1 (1.0 is 1, as JSON Schema's `integer` says).
The documented refusals (BODY_RESPONSES, NO_MODEL, LOG_UNAVAILABLE, UNAUTHORIZED, BUSY) are declared here once;
the routes name them, so the document lists every status a route can answer (docs/CONTRACTS.md, "HTTP API").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
Accepted = Mapping[str, Sequence[str]] | None  # feature name -> every name it is accepted under (reading.py)


def batch_model(reading: type[BaseModel], max_rows: int) -> type[BaseModel]:
    return create_model(
        "BatchRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Up to {max_rows} readings, each predicted and logged on its own with its own request_id.",
        readings=(list[reading], Field(min_length=1, max_length=max_rows)),  # type: ignore[valid-type]
    )


def _integral(value: Any) -> Any:
    """1.0 -> 1: JSON has one number type, and JSON Schema's `integer` counts 1.0 as an integer."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


class Feedback(BaseModel):
    """The true outcome for an earlier prediction, arriving later."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"request_id": "3f9a0c1e2b7d4a65-0000001", "label": 1}]}
    )
    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="request_id of the prediction this label is for")
    label: Annotated[int, BeforeValidator(_integral)] = Field(
        strict=True,
        ge=0,
        le=1,
        description="1 if the machine failed, else 0 (a JSON number: 1.0 is 1; strings and booleans are refused)",
    )


def feedback_batch_model(max_rows: int) -> type[BaseModel]:
    """POST /feedback/batch's body: 1..max_rows labels (deployment.max_feedback_rows), each a `Feedback`."""
    return create_model(
        "FeedbackBatch",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"labels": [{"request_id": "3f9a0c1e2b7d4a65-0000001", "label": 1}]}]},
        ),
        __doc__=f"Up to {max_rows} labels, validated as POST /feedback validates one; all logged or none.",
        labels=(list[Feedback], Field(min_length=1, max_length=max_rows)),
    )


class Prediction(BaseModel):
    request_id: str
    model_version: str
    failure_probability: float
    prediction: Literal[0, 1]
    threshold: float


class RowPrediction(BaseModel):
    request_id: str
    failure_probability: float
    prediction: Literal[0, 1]


class BatchPrediction(BaseModel):
    model_version: str
    threshold: float
    predictions: list[RowPrediction]


class FeedbackAccepted(BaseModel):
    request_id: str
    label: Literal[0, 1]
    recorded: bool


class FeedbackBatchAccepted(BaseModel):
    recorded: int = Field(description="labels written to this instance's feedback log (all of the body's)")


class FieldError(BaseModel):
    field: str
    reason: str
    type: str


class ErrorBody(BaseModel):
    detail: str = Field(description="one line naming the field(s) and the reason")
    errors: list[FieldError] = Field(default_factory=list)


Responses = dict[int | str, dict[str, Any]]


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


# The refusals documented on the routes that take a body (routing.parse and Service.model raise them).
BODY_RESPONSES: Responses = {
    400: _error("Malformed JSON, or a Content-Length that is not a number"),
    408: _error(
        "The body did not arrive within security.body_read_timeout_s (the connection is closed)",
        headers={"Connection": _header("close")},
    ),
    413: _error("Body over deployment.max_body_bytes"),
    415: _error("Content-Type is not application/json"),
    422: _error("A field is missing, of the wrong type, not finite or out of range, or too many readings"),
}
LOG_UNAVAILABLE: Responses = {503: _error("The feedback log cannot take appends now (e.g. disk full); nothing logged")}
NO_MODEL: Responses = {503: _error("No model is loaded yet")}
UNAUTHORIZED: Responses = {
    401: _error(
        "No API key, or a wrong one (send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`)",
        headers={"WWW-Authenticate": _header('Bearer realm="clockwork"')},
    )
}
BUSY: Responses = {
    429: _error(
        "Too many lineage lookups running or waiting (security.lineage_concurrency, security.lineage_waiting)",
        headers={"Retry-After": _header("seconds to wait before asking again", "integer")},
    )
}


class Health(BaseModel):
    status: Literal["ok"]
    instance_id: str


class Ready(BaseModel):
    ready: bool
    model_version: str | None
    pinned_version: str | None
    detail: str
    last_swap_failure: dict[str, Any] | None
    config_error: str | None


class ShadowInfo(BaseModel):
    """The live shadow (deployment.shadow_version): scored beside every prediction, logged, never answered."""

    pinned_version: str = Field(description="deployment.shadow_version")
    model_version: str | None = Field(description="the shadow loaded; null when it failed to load (see error)")
    onnx_sha256: str | None
    loaded_at: str | None
    threshold: float | None = Field(description="the threshold its logged labels use: the one it would serve with")
    error: str | None = Field(description="why the pinned shadow failed to load (serving is unaffected)")


class ModelInfo(BaseModel):
    model_version: str
    onnx_sha256: str
    loaded_at: str
    threshold: float = Field(description="the served model's threshold: deployment.threshold, else the model's own")
    instance_id: str = Field(description="the instance (process or replica) that answered")
    input_columns: list[str] = Field(description="the model input's columns, in order (the dataset's features)")
    metadata: dict[str, Any]
    shadow: ShadowInfo | None = Field(None, description="the live shadow; null when config names none")


def _field_name(loc: tuple) -> str:
    """('readings', 3, 'Flow [m3/h]') -> readings[3].Flow [m3/h]"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def _reason(err: ErrorDetails, accepted: Mapping[str, Sequence[str]]) -> str:
    kind = err["type"]
    loc = err["loc"]
    name = loc[-1] if loc else None
    if kind == "missing":
        others = [n for n in accepted.get(name, ()) if n != name] if isinstance(name, str) else []
        return f"field required (also accepted as {', '.join(map(repr, others))})" if others else "field required"
    if kind == "extra_forbidden":
        return "unknown field (or the same field given twice under two names)"
    if kind == "finite_number":
        return "must be a finite number (NaN and Infinity are refused)"
    if kind in ("greater_than_equal", "less_than_equal") and isinstance(name, str):
        ctx = err.get("ctx", {})
        bound = ctx.get("ge", ctx.get("le"))
        return f"{err.get('input')!r} is outside the physical range ({err['msg'].lower()}; bound {bound})"
    if kind == "literal_error" and isinstance(name, str):
        return f"unknown level {err.get('input')!r}: expected one of {err.get('ctx', {}).get('expected')}"
    if kind == "too_long" and name == "readings":
        return f"too many rows: {err['msg'].lower()} (deployment.max_batch_rows)"
    if kind == "too_long" and name == "labels":
        return f"too many labels: {err['msg'].lower()} (deployment.max_feedback_rows)"
    return err["msg"]


class BadRequest(Exception):
    """A request the service refuses: status code, one-line detail, per-field errors, extra response headers."""

    def __init__(
        self, status: int, detail: str, errors: list[dict] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers

    def body(self) -> dict:
        return {"detail": self.detail, "errors": self.errors}


def explain(e: ValidationError, accepted: Accepted = None) -> BadRequest:
    """A pydantic error -> 400 (not JSON) or 422 (JSON, wrong content) naming every field and reason;
    `accepted` (feature name -> every name it is accepted under) lets a missing field name its other names.

    Too many readings is a 422 like any other violation of the documented schema (its maxItems), not a 413:
    413 is for a body over deployment.max_body_bytes, which no schema states."""
    errs = e.errors(include_url=False)
    if errs and errs[0]["type"] == "json_invalid":
        return BadRequest(
            400,
            f"malformed JSON: {errs[0]['msg'].removeprefix('Invalid JSON: ')}",
            [{"field": "(body)", "reason": errs[0]["msg"], "type": "json_invalid"}],
        )
    names = accepted or {}
    items = [{"field": _field_name(err["loc"]), "reason": _reason(err, names), "type": err["type"]} for err in errs]
    if items and items[0]["field"] == "(body)" and errs[0]["type"] in ("model_type", "model_attributes_type"):
        items[0]["reason"] = "the body must be a JSON object"
    shown = "; ".join(f"{i['field']}: {i['reason']}" for i in items[:5])
    more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
    return BadRequest(422, f"invalid input: {shown}{more}", items)
