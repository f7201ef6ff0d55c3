"""Every volume path and Redis key, built in one place from the settings.

Version names are validated before a path is built from them, so a crafted name such as
`../../etc` never reaches the file system.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import DATA_VERSION_RE, MODEL_VERSION_RE, Settings
from shared.errors import InvalidVersionError

DATA_SET_RE = r"^[a-z0-9_]+$"

# File names inside the folders config.yaml names (the layout is code; where the folders are is config).
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
TRAIN_FILE = "train.csv"
PRODUCTION_FILE = "production.csv"  # the split's later rows, beside train.csv
LABELLED_FILE = "labelled.jsonl"  # the monitor's joined prediction + label rows
LABELLED_SNAPSHOT = "labelled.csv"  # the labelled rows a retrain data version trained on
LOG_SUFFIX = ".jsonl"  # prediction and feedback logs: <instance id>.jsonl, then <instance id>@000001.jsonl, ...
SEGMENT_SEP = "@"  # never in an instance id ([A-Za-z0-9_.-]): splits a segment's name into instance and number
PARQUET_PREFIX = "part-"  # a compacted segment's Parquet file: part-<segment stem>~<segment sha256[:12]>.parquet
SHA_SEP = "~"
PARQUET_SUFFIX = ".parquet"


def check_model_version(version: str) -> str:
    if not isinstance(version, str) or not MODEL_VERSION_RE.match(version):
        raise InvalidVersionError(f"invalid model version {version!r}: expected v<number>, e.g. v3")
    return version


def check_data_version(version: str) -> str:
    if not isinstance(version, str) or not DATA_VERSION_RE.match(version):
        raise InvalidVersionError(f"invalid data version {version!r}: expected v<number>_<name>, e.g. v2_cleaned")
    return version


def segment_name(instance_id: str, number: int) -> str:
    """The file name of an instance's log segment: segment 0 is `<instance id>.jsonl` (the name before rotation
    existed), segment n > 0 `<instance id>@<n, 6 digits>.jsonl`. A rotation always opens a new name."""
    return f"{instance_id}{LOG_SUFFIX}" if number == 0 else f"{instance_id}{SEGMENT_SEP}{number:06d}{LOG_SUFFIX}"


def parse_segment(name: str) -> tuple[str, int] | None:
    """(instance id, segment number) of a log segment's file name (or of its Parquet file's); None if it is not
    one (e.g. a probe file or a name with a non-numeric segment)."""
    stem = name
    for suffix in (LOG_SUFFIX, PARQUET_SUFFIX):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        return None
    if name.endswith(PARQUET_SUFFIX):
        stem = stem.removeprefix(PARQUET_PREFIX).rsplit(SHA_SEP, 1)[0]
    instance, sep, number = stem.partition(SEGMENT_SEP)
    if not instance or instance.startswith("."):
        return None
    if not sep:
        return instance, 0
    return (instance, int(number)) if number.isdigit() and int(number) > 0 else None


def instance_of(path: str | Path) -> str:
    """The instance id that wrote a log segment (or the segment a Parquet file was compacted from)."""
    parsed = parse_segment(Path(path).name)
    return parsed[0] if parsed else Path(path).stem


def version_number(version: str) -> int:
    """v12 -> 12, v3_split -> 3."""
    return int(version[1:].split("_", 1)[0])


@dataclass(frozen=True)
class Paths:
    """The volume layout. Construct with `Paths.from_settings(settings)`."""

    volume: Path
    settings: Settings

    @classmethod
    def from_settings(cls, settings: Settings) -> Paths:
        return cls(volume=settings.volume, settings=settings)

    def _v(self, rel: str) -> Path:
        return self.volume / rel

    # --- data -------------------------------------------------------------------------------
    @property
    def raw_file(self) -> Path:
        return self._v(self.settings.dataset.raw_file)

    @property
    def processed_dir(self) -> Path:
        return self._v(self.settings.data.processed_dir)

    @property
    def production_dir(self) -> Path:
        return self._v(self.settings.data.production_dir)

    @property
    def manifest(self) -> Path:
        return self._v(self.settings.data.manifest)

    def data_version_dir(self, version: str) -> Path:
        return self.processed_dir / check_data_version(version)

    def production_version_dir(self, version: str) -> Path:
        return self.production_dir / check_data_version(version)

    def train_file(self, version: str) -> Path:
        """The training table of a data version (what the trainer reads)."""
        return self.data_version_dir(version) / TRAIN_FILE

    def labelled_snapshot(self, version: str) -> Path:
        """The labelled production rows a retrain data version was built with."""
        return self.data_version_dir(version) / LABELLED_SNAPSHOT

    # --- models -----------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self._v(self.settings.registry.dir)

    def model_dir(self, version: str) -> Path:
        return self.models_dir / check_model_version(version)

    def model_file(self, version: str) -> Path:
        return self.model_dir(version) / MODEL_FILE

    def metadata_file(self, version: str) -> Path:
        return self.model_dir(version) / METADATA_FILE

    @property
    def metadata_log(self) -> Path:
        return self._v(self.settings.registry.metadata_log)

    # --- logs -------------------------------------------------------------------------------
    @property
    def deployment_log(self) -> Path:
        return self._v(self.settings.deployment.deployment_log)

    @property
    def prediction_log_dir(self) -> Path:
        return self._v(self.settings.deployment.prediction_log_dir)

    @property
    def feedback_log_dir(self) -> Path:
        return self._v(self.settings.deployment.feedback_log_dir)

    def prediction_log(self, instance_id: str) -> Path:
        """The prediction log one inference instance alone writes."""
        return self.prediction_log_dir / f"{instance_id}{LOG_SUFFIX}"

    def feedback_log(self, instance_id: str) -> Path:
        """The feedback log one inference instance alone writes."""
        return self.feedback_log_dir / f"{instance_id}{LOG_SUFFIX}"

    @property
    def parquet_dir(self) -> Path:
        """Compacted log segments, Hive-style: <kind>/day=YYYY-MM-DD[/model_version=vN]/part-<segment>.parquet."""
        return self._v(self.settings.logs.parquet_dir)

    @property
    def parquet_manifest(self) -> Path:
        """Append-only JSON lines: each compacted segment with its Parquet files (sha256, rows); each removal."""
        return self._v(self.settings.logs.manifest)

    @property
    def lineage_index(self) -> Path:
        """The SQLite index of request_id -> (log file, byte offset) that lineage lookups read."""
        return self._v(self.settings.deployment.lineage_index)

    @property
    def embedded_redis_dir(self) -> Path:
        return self._v(self.settings.redis.embedded_data_dir)

    # --- monitor ----------------------------------------------------------------------------
    @property
    def reports_dir(self) -> Path:
        return self._v(self.settings.monitoring.reports_dir)

    @property
    def monitor_state(self) -> Path:
        return self._v(self.settings.monitoring.state_file)

    @property
    def monitor_store(self) -> Path:
        return self._v(self.settings.monitoring.store_file)

    @property
    def labelled_dir(self) -> Path:
        return self._v(self.settings.monitoring.labelled_dir)

    @property
    def labelled_file(self) -> Path:
        return self.labelled_dir / LABELLED_FILE


@dataclass(frozen=True)
class RedisKeys:
    """Every Redis key and queue name. Construct with `RedisKeys.from_settings(settings)`.

    Job ids are free text (`^[A-Za-z0-9_.:-]{1,128}$`): the job hashes, the leases and the monitor's keys each
    live under their own prefix, and config refuses prefixes that nest, so no id can name another key.
    """

    retrain_queue: str
    processing_queue: str
    dead_letter_queue: str
    job_key_prefix: str
    lease_key_prefix: str
    monitor_key_prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisKeys:
        r = settings.redis
        return cls(
            r.retrain_queue,
            r.processing_queue,
            r.dead_letter_queue,
            r.job_key_prefix,
            r.lease_key_prefix,
            r.monitor_key_prefix,
        )

    def job(self, message_id: str) -> str:
        """Hash holding one job's status (queued, running, done with version, failed with reason)."""
        return f"{self.job_key_prefix}:{message_id}"

    def job_lock(self, message_id: str) -> str:
        """The lease of the worker running a job (SET NX PX, renewed by its heartbeat)."""
        return f"{self.lease_key_prefix}:{message_id}"

    @property
    def monitor_cooldown(self) -> str:
        """The monitor's record of the last retrain message it sent (outside the job namespace)."""
        return f"{self.monitor_key_prefix}:last_trigger"
