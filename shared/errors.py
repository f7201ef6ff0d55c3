"""Domain errors, one module. Messages carry the identifier, the place and the reason."""


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
