"""The sections of config.yaml: one strict, frozen pydantic model per section (shared/config.py assembles them
into `Settings` and loads the file). Every key, type and range a service relies on is declared here, so a bad
value stops the service at start-up with one line naming the key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_VERSION_RE = re.compile(r"^v[0-9]+$")
DATA_VERSION_RE = re.compile(r"^v[0-9]+_[a-z0-9_]+$")

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
RelPath = Annotated[str, Field(min_length=1)]
# Columns the prediction and labelled logs add beside a dataset's features and label (shared.labelled).
LOG_COLUMNS = ("time", "request_id", "model_version", "probability", "predicted", "feedback_time")
# Columns the Parquet form of the logs has beside the features (shared.logtables), its partitions included.
PARQUET_COLUMNS = ("time", "request_id", "probability", "label", "threshold", "source_line", "day", "model_version")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DriftRecipe(_Strict):
    """A seeded drift of one dataset feature (services/prep/recipes.py). A numeric feature: `offset` adds `value`,
    `scale` multiplies by it, plus Gaussian noise of `noise_std`. A categorical feature: `levels` re-draws a `share`
    of the rows to `level`. Settings checks that `column` names a feature of the right kind."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    column: Annotated[str, Field(min_length=1)]
    kind: Literal["offset", "scale", "levels"]
    value: float | None = None  # offset, scale
    noise_std: Annotated[float, Field(ge=0)] = 0.0  # offset, scale
    level: Annotated[str, Field(min_length=1)] | None = None  # levels
    share: Annotated[float, Field(gt=0, le=1)] | None = None  # levels

    @model_validator(mode="after")
    def _fields_of_kind(self) -> DriftRecipe:
        if self.kind == "levels":
            if self.level is None or self.share is None:
                raise ValueError(f"recipe {self.name}: kind levels needs level and share")
            if self.value is not None or self.noise_std:
                raise ValueError(f"recipe {self.name}: kind levels takes level and share, not value or noise_std")
        else:
            if self.value is None:
                raise ValueError(f"recipe {self.name}: kind {self.kind} needs value")
            if self.level is not None or self.share is not None:
                raise ValueError(f"recipe {self.name}: kind {self.kind} takes value and noise_std, not level or share")
        return self


class Day2Config(_Strict):
    seed: Annotated[int, Field(ge=0)]
    recipes: list[DriftRecipe]

    @field_validator("recipes")
    @classmethod
    def _unique_names(cls, v: list[DriftRecipe]) -> list[DriftRecipe]:
        names = [r.name for r in v]
        if len(names) != len(set(names)):
            raise ValueError(f"recipe names must be unique, got {names}")
        if "natural" in names:
            raise ValueError("'natural' is reserved for the untouched later timeframe")
        return v


DataVersion = Annotated[str, Field(pattern=DATA_VERSION_RE.pattern)]


class PrepVersions(_Strict):
    raw: DataVersion
    cleaned: DataVersion
    split: DataVersion
    day2: DataVersion


class DataConfig(_Strict):
    processed_dir: RelPath
    production_dir: RelPath
    manifest: RelPath
    versions: PrepVersions
    version: DataVersion
    train_rows: PosInt
    production_rows: PosInt
    day2: Day2Config


class FeaturesConfig(_Strict):
    # Build the dataset's derived features (dataset.derived) inside the model.
    derived: bool


class ModelParams(_Strict):
    algorithm: Literal["random_forest", "gradient_boosting", "logistic_regression"]
    n_estimators: PosInt
    max_depth: PosInt
    learning_rate: PosFloat
    c: PosFloat
    class_weight: Literal["none", "balanced", "balanced_subsample"]
    random_state: Annotated[int, Field(ge=0)]


class TrainingConfig(_Strict):
    validation_fraction: Fraction
    threshold: Probability  # the decision threshold of decision.threshold_policy `fixed`
    parity_tolerance: PosFloat


class DecisionConfig(_Strict):
    """What a wrong decision costs (per reading; only the ratio matters) and how the trainer picks the threshold."""

    cost_missed_failure: PosFloat  # a failure the model did not flag
    cost_false_alarm: PosFloat  # a flag on a reading that was not a failure
    # fixed: training.threshold; max_f1: the best F1 on the validation hold-out; min_cost: the lowest expected cost
    threshold_policy: Literal["fixed", "max_f1", "min_cost"]
    # The map from the model's score to a calibrated failure probability, fitted on the validation hold-out and
    # run inside the ONNX graph (services/trainer/calibration.py): none | sigmoid | isotonic
    calibration: Literal["none", "sigmoid", "isotonic"]


class RegistryConfig(_Strict):
    dir: RelPath
    metadata_log: RelPath


class CoalesceConfig(_Strict):
    enabled: bool
    max_rows: PosInt
    max_open_iterations: Annotated[int, Field(ge=0)]


class DeploymentConfig(_Strict):
    model_version: Annotated[str, Field(pattern=MODEL_VERSION_RE.pattern)]
    # A live shadow: every prediction batch is scored by this version too and logged beside the served answer
    # (the record's `shadow`), never in a response; None (null): no shadow. Applied live, like the pin.
    shadow_version: Annotated[str, Field(pattern=MODEL_VERSION_RE.pattern)] | None
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(gt=0, lt=65536)]
    # None (null): each model's own threshold, metadata.json decision.threshold; a number overrides it for all.
    threshold: Probability | None
    max_batch_rows: PosInt
    max_body_bytes: PosInt
    max_feedback_rows: PosInt  # labels one POST /feedback/batch may carry
    # inference processes on deployment.port, each with its own instance id, logs, watcher (services/inference)
    workers: PosInt
    reload_interval_s: PosFloat
    drain_grace_s: PosFloat
    coalesce: CoalesceConfig
    deployment_log: RelPath
    prediction_log_dir: RelPath
    feedback_log_dir: RelPath
    lineage_index: RelPath  # SQLite file: request_id -> (log, offset) of prediction and feedback lines


class LogsConfig(_Strict):
    """Segments of the prediction and feedback logs and their compaction into Parquet (services/monitor/compact.py)."""

    rotate_bytes: PosInt  # a segment at or over this size is closed: the next record opens a new one
    rotate_daily: bool  # a new segment at each UTC day (a record of a new day opens one)
    parquet_dir: RelPath  # Hive-style partitions: <kind>/day=YYYY-MM-DD[/model_version=vN]/part-<segment>.parquet
    manifest: RelPath  # append-only JSON lines: each compacted segment, its Parquet files, their sha256; removals
    compact_each_cycle: bool  # the monitor compacts after each cycle (else only `python -m services.monitor compact`)
    keep_segments: bool  # keep a JSONL segment once its Parquet files are listed (default: remove it)
    retention_days: PosInt | None  # Parquet partitions of days older than this are removed; null: kept forever


class SecurityConfig(_Strict):
    """The request side's defences. The API key itself is never here: see `api_key_from_env`."""

    predict_requires_key: bool  # /predict and /predict/batch keyed too (when a key is set); else open
    body_read_timeout_s: PosFloat  # a request body not all there by then: 408, connection closed
    lineage_concurrency: PosInt  # lineage lookups running at once (each in a worker thread)
    lineage_waiting: Annotated[int, Field(ge=0)]  # lookups queued behind them; beyond: 429 with Retry-After
    lineage_retry_after_s: PosInt
    # each lookup holds its slot at least this long: at most lineage_concurrency / this many lookups a second
    lineage_min_interval_s: Annotated[float, Field(ge=0, le=10)]


class Thresholds(_Strict):
    f1_drop: Probability
    error_rate_increase: Probability
    psi: PosFloat
    psi_bins: Annotated[int, Field(ge=2)]
    cramers_v: Probability  # a categorical feature's effect size must exceed this


class DriftTestConfig(_Strict):
    """How the per-feature drift tests are read as one family (services/monitor/drift.py): the p-values of all
    features are adjusted together (holm: family-wise error; bh: Benjamini-Hochberg false discovery rate; none),
    and a feature is flagged when its adjusted p-value is below `alpha` and its effect size passes its threshold."""

    correction: Literal["holm", "bh", "none"]
    alpha: Fraction


class ReplayConfig(_Strict):
    rate_per_s: PosFloat
    feedback_delay_s: Annotated[float, Field(ge=0)]
    # null: this host's inference at deployment.port (so CLOCKWORK_PORT moves replay too)
    url: Annotated[str, Field(pattern=r"^https?://")] | None


class BootstrapConfig(_Strict):
    """The paired bootstrap that gives the gate's improvement its interval."""

    samples: Annotated[int, Field(ge=100)]
    seed: Annotated[int, Field(ge=0)]
    confidence: Fraction  # e.g. 0.9: the interval from the 5th to the 95th percentile


class GateConfig(_Strict):
    # expected_cost: per 1,000 readings at decision.cost_*, lower is better; f1, recall, precision: higher is better
    metric: Literal["expected_cost", "f1", "recall", "precision"]
    # The improvement's lower bound must reach this, in the metric's units (cost per 1,000 readings, or a fraction).
    margin: Annotated[float, Field(ge=0)]
    auto_promote: bool
    window_size: PosInt
    min_positives: Annotated[int, Field(ge=0)]
    bootstrap: BootstrapConfig
    # The shadow replay of logged traffic (services/trainer/shadow_veto.py): with at least min_positives failures
    # among its labelled rows, a candidate whose expected cost there exceeds the served predictions' by more than
    # shadow_cost_margin (cost per 1,000 readings) is kept even when the bootstrap says promote.
    shadow_veto: bool
    shadow_cost_margin: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _margin_in_units(self) -> GateConfig:
        if self.metric != "expected_cost" and self.margin > 1:
            raise ValueError(f"margin {self.margin} exceeds 1, the most {self.metric} can improve")
        return self


class EstimateConfig(_Strict):
    window: PosInt  # most recent predictions per model version the label-free estimate covers


class MonitoringConfig(_Strict):
    interval_s: PosFloat
    reports_dir: RelPath
    keep_reports: PosInt
    state_file: RelPath
    store_file: RelPath  # the monitor's SQLite store (pending, orphans, windows, offsets)
    labelled_dir: RelPath
    window_size: PosInt
    min_labelled: PosInt
    drift_min_samples: PosInt
    max_pending: PosInt
    max_orphans: PosInt
    thresholds: Thresholds
    drift: DriftTestConfig
    cooldown_s: Annotated[float, Field(ge=0)]
    replay: ReplayConfig
    gate: GateConfig
    estimate: EstimateConfig  # label-free performance estimate (services/monitor/estimate.py)


class RedisConfig(_Strict):
    url: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://")]
    retrain_queue: Annotated[str, Field(min_length=1)]
    processing_queue: Annotated[str, Field(min_length=1)]
    dead_letter_queue: Annotated[str, Field(min_length=1)]
    # Namespaces: a job id is free text, so the job hash, its lease and the monitor's own keys live under
    # prefixes no id can cross (checked below): no id can address another key.
    job_key_prefix: Annotated[str, Field(min_length=1)]
    lease_key_prefix: Annotated[str, Field(min_length=1)]
    monitor_key_prefix: Annotated[str, Field(min_length=1)]
    lease_s: PosFloat
    max_message_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)]
    # Starts of one job id (its workers died on it each time) before the job is failed instead of run again.
    max_attempts: PosInt
    embedded_data_dir: RelPath

    @model_validator(mode="after")
    def _namespaces_apart(self) -> RedisConfig:
        """`<job prefix>:<id>` must never equal `<lease prefix>:<id>`, a queue or a monitor key, for any id."""
        spaces = {
            "job_key_prefix": self.job_key_prefix,
            "lease_key_prefix": self.lease_key_prefix,
            "monitor_key_prefix": self.monitor_key_prefix,
        }
        for name, prefix in spaces.items():
            for other_name, other in spaces.items():
                if name != other_name and (prefix + ":").startswith(other + ":"):
                    raise ValueError(
                        f"{name} {prefix!r} lies inside {other_name} {other!r}: "
                        "a job id could then address the other's keys"
                    )
            for queue in ("retrain_queue", "processing_queue", "dead_letter_queue"):
                if getattr(self, queue).startswith(prefix + ":"):
                    raise ValueError(
                        f"{queue} {getattr(self, queue)!r} lies inside {name} {prefix!r}: "
                        "a job id could then address the queue"
                    )
        return self


class ConsoleConfig(_Strict):
    """The operator's console (services.console): one web page over the volume and Redis, on loopback."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(gt=0, lt=65536)]
    # null: the inference service of this config on this host (Settings.local_url)
    inference_url: Annotated[str, Field(pattern=r"^https?://")] | None
