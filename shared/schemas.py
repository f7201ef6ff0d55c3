"""Schemas at every boundary between services: manifest entries, queue messages, log records.

Each is a pydantic model; what a service writes, another reads back through the same model.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import MessageError, explain

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
MESSAGE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def utc_now() -> str:
    """UTC time as ISO 8601 with microseconds and a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(value: str | datetime) -> datetime:
    """An aware UTC datetime from ISO 8601 text (a trailing Z or an offset; naive means UTC) or a datetime.

    ValueError names the text when it is not ISO 8601.
    """
    if isinstance(value, datetime):
        t = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class InputFile(_Record):
    path: str
    sha256: Sha256


class ManifestEntry(_Record):
    """One line of manifest.txt: one produced file and everything needed to reproduce it."""

    data_version: str
    path: str  # relative to the volume root
    sha256: Sha256
    rows: int
    producer: str  # module that wrote it, e.g. services.prep.pipeline
    git_commit: str
    git_dirty: bool | None
    inputs: list[InputFile]
    params: dict[str, Any]
    created_at: str


class RetrainMessage(_Record):
    """A retrain request on the Redis queue.

    Push one by hand: redis-cli LPUSH clockwork:retrain '{"id":"manual-1","reason":"manual"}'
    """

    id: Annotated[str, Field(pattern=MESSAGE_ID_RE.pattern)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    created_at: str | None = None
    # Evidence from the monitor: which checks fired, their figures, the report path, the window.
    evidence: dict[str, Any] = Field(default_factory=dict)
    # Train on the training data plus the labelled production data the monitor gathered.
    include_production: bool = True
    # Override the data version to train on (default: build a new one, or config's data.version).
    data_version: Annotated[str, Field(pattern=r"^v[0-9]+_[a-z0-9_]+$")] | None = None


# Limits on what a message may carry (a message is a request, not a payload). `max_bytes` comes from
# config (redis.max_message_bytes); nesting deeper than MAX_MESSAGE_DEPTH is refused before any parser recurses.
DEFAULT_MAX_MESSAGE_BYTES = 65536
MAX_MESSAGE_DEPTH = 32


def _nesting_depth(text: str) -> int:
    """The deepest nesting of JSON arrays/objects in `text` (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_retrain_message(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> RetrainMessage:
    """Validate a raw queue payload; MessageError names what is wrong.

    Never raises anything else for any input: over `max_bytes`, nested deeper than MAX_MESSAGE_DEPTH, not UTF-8,
    not JSON, not an object, or a field the schema refuses (an unsafe data_version such as `../../etc`).
    """
    size = len(raw.encode("utf-8", errors="surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > max_bytes:
        raise MessageError(f"retrain message is {size} bytes, over the limit of {max_bytes} (redis.max_message_bytes)")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise MessageError(f"retrain message is not UTF-8: {e}") from e
    depth = _nesting_depth(text)
    if depth > MAX_MESSAGE_DEPTH:
        raise MessageError(f"retrain message nests {depth} levels deep, over the limit of {MAX_MESSAGE_DEPTH}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MessageError(f"retrain message is not JSON: {e.msg} at position {e.pos}") from e
    except (RecursionError, ValueError) as e:  # e.g. a number too long to convert
        raise MessageError(f"retrain message is not acceptable JSON: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict):
        raise MessageError(f"retrain message must be a JSON object, got {type(data).__name__}")
    try:
        return RetrainMessage.model_validate(data)
    except ValidationError as e:
        raise MessageError(f"retrain message: {explain(e)}") from e


class ShadowScore(_Record):
    """What the live shadow (deployment.shadow_version) answered for the same reading; never sent to the client."""

    model_version: str
    probability: float
    label: int  # at `threshold`, the one the shadow would serve with
    threshold: float


class PredictionRecord(_Record):
    """One line of a prediction log (written by inference before the response returns)."""

    time: str
    request_id: str
    model_version: str
    inputs: dict[str, Any]  # the six raw readings, snake_case
    probability: float
    label: int
    threshold: float
    shadow: ShadowScore | None = None  # only when a live shadow scored the reading (absent from the line otherwise)

    def to_line(self) -> str:
        data = self.model_dump(mode="json", exclude={"shadow"} if self.shadow is None else None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


class FeedbackRecord(_Record):
    """One line of a feedback log: the true outcome for an earlier request_id, arriving later."""

    time: str
    request_id: str
    label: Literal[0, 1]


class ParquetFile(_Record):
    """A file a compaction wrote: where (relative to the volume), its sha256 and rows, its partition values."""

    path: str
    sha256: Sha256
    rows: int
    partition: dict[str, str] = Field(default_factory=dict)


class CompactionEntry(_Record):
    """One line of the Parquet manifest (logs.manifest): a log segment compacted into Parquet files. Written once
    they are all durable; only then may the segment be removed."""

    event: Literal["compact"] = "compact"
    kind: Literal["prediction", "feedback"]
    segment: str  # the JSONL segment, relative to the volume
    segment_sha256: Sha256
    segment_bytes: int
    rows: int  # records compacted (the sum of the files' rows)
    malformed: int  # lines that were not valid records: kept verbatim in `malformed_file`
    files: list[ParquetFile]
    malformed_file: ParquetFile | None = None
    created_at: str


class ExpiryEntry(_Record):
    """One line of the Parquet manifest: a day's partitions of one kind removed by retention (logs.retention_days).
    Written before the files are removed (a re-run removes what a crash left)."""

    event: Literal["expire"] = "expire"
    kind: Literal["prediction", "feedback"]
    day: str
    files: list[str]  # relative to the volume
    created_at: str


DEPLOYMENT_LOG_COLUMNS = [
    "time",
    "event",  # start | swap | swap_failed | rollback | promote
    "version",
    "previous_version",
    "onnx_sha256",
    "data_version",
    "git_commit",
    "instance_id",
    "detail",
]


class DataFile(_Record):
    """A data file a model was trained from, as its manifest entry recorded it."""

    path: str  # relative to the volume root
    sha256: Sha256
    rows: int


class GitState(_Record):
    commit: str
    dirty: bool | None


class ModelMetrics(_Record):
    """Failure-class metrics of a model on one labelled set, at one threshold."""

    rows: int
    positives: int
    threshold: float
    accuracy: float
    error_rate: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None  # None when the set holds one class only
    log_loss: float | None
    confusion_matrix: dict[str, int]  # {"tn", "fp", "fn", "tp"}
    file: str | None = None  # the labelled file, when not the training hold-out


class ModelMetadata(_Record):
    """models/vN/metadata.json: everything needed to trace and reproduce one registered model."""

    version: str
    created_at: str
    data_version: str
    data_files: list[DataFile]
    git: GitState
    config: dict[str, Any]  # the sections used: data_version, features, model_params, training
    feature_schema: dict[str, Any]
    metrics: ModelMetrics  # validation hold-out, computed by running the ONNX file
    production_metrics: ModelMetrics | None = None  # the data version's production rows, for information
    onnx_sha256: Sha256
    onnx_bytes: int
    parity: dict[str, Any]  # ONNX vs scikit-learn on the validation rows
    decision: dict[str, Any] | None = None  # threshold, policy, costs, cost curve (services.trainer.decision)
    library_versions: dict[str, str]
    training_seconds: float
    trigger: dict[str, Any]  # {"kind": "command", ...} or {"kind": "message", "message_id", "reason", "evidence", ...}
    gate: dict[str, Any] | None = None  # None when trained by command
    # services.trainer.shadow.ShadowReport on the recent logged traffic (retrain jobs); None when trained by command
    shadow: dict[str, Any] | None = None
