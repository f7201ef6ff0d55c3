"""Domain errors, one module. Messages carry the identifier, the place and the reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ClockworkError(Exception):
    """Base class: every error a service reports as one clear line."""


class ConfigError(ClockworkError):
    """config.yaml is missing or invalid."""


class IntegrityError(ClockworkError):
    """A file's content does not match its recorded sha256 (raw data, model, manifest input)."""


class VersionExistsError(ClockworkError):
    """Different content was offered under an existing, immutable version."""


class InvalidVersionError(ClockworkError):
    """A version name does not match its pattern (checked before any path is built from it)."""


class NotFoundError(ClockworkError):
    """A version, file or record that should exist does not."""


class DataValidationError(ClockworkError):
    """A data file does not have the expected schema, types or physical ranges."""


class ModelLoadError(ClockworkError):
    """A model version cannot be served: missing, corrupt, external data, wrong signature."""


class MessageError(ClockworkError):
    """A queue message is malformed (goes to the dead-letter queue with this reason)."""


class ExportError(ClockworkError):
    """A trained model could not be exported faithfully (e.g. ONNX disagrees with scikit-learn)."""


class JobError(ClockworkError):
    """A retrain job could not be completed (the reason is recorded in its job status)."""


class MonitorBusyError(ClockworkError):
    """Another monitor process holds the monitor's state (one monitor per volume)."""


class ReplayError(ClockworkError):
    """Traffic replay could not run: the data set is unknown or the inference service does not answer."""


def explain(err: ValidationError, *, max_input: int = 60, retired: Mapping[str, str] | None = None) -> str:
    """A pydantic error in one line: the key (dotted), the reason and what was found; every missing key named.

    Unknown keys come first: a typo such as `n_estimatorz` also makes its neighbour `n_estimators` missing,
    and the unknown key is the cause. e.g. `metrics.f1: required key is missing`,
    `model_params.n_estimatorz: unknown key; required key missing: model_params.n_estimators`, or
    `offsets.predictions/a.jsonl: Input should be a valid integer (got 'x')`. An unknown key found in `retired`
    (dotted key -> what replaced it) says what to write instead.
    """
    errors = err.errors(include_url=False)
    missing = [".".join(str(p) for p in e["loc"]) or "(top level)" for e in errors if e["type"] == "missing"]
    others = sorted((e for e in errors if e["type"] != "missing"), key=lambda e: e["type"] != "extra_forbidden")
    parts = []
    if others:
        first = others[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        if first["type"] == "extra_forbidden" and retired and key in retired:
            msg += f" (retired: {retired[key]})"
        if first["type"] not in ("json_invalid", "extra_forbidden") and "input" in first:
            shown = repr(first["input"])
            msg += f" (got {shown[:max_input]}{'...' if len(shown) > max_input else ''})"
        parts.append(f"{key}: {msg}" if key else msg)
        if len(others) > 1:
            parts[-1] += f" (+{len(others) - 1} more)"
    if missing:
        parts.append(f"required key{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}")
    return "; ".join(parts).replace("\n", " ")
