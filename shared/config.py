"""config.yaml: the one validated settings object every service loads at start-up.

`load_settings(path)` returns `Settings` or raises `ConfigError` whose message is one line naming the
file, the key and the reason. Services call `load_settings_or_exit` from `main()`.
Only deployment values may come from the environment (see ENV_OVERRIDES); the Redis password may come from
a file named by $CLOCKWORK_REDIS_PASSWORD_FILE (it goes into redis.url; no secret lives in config.yaml).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.dataset import CategoricalColumn, DatasetConfig
from shared.errors import ConfigError, explain

DEFAULT_CONFIG = "config.yaml"
CONFIG_ENV = "CLOCKWORK_CONFIG"
# Environment variable -> dotted config key. Deployment-specific values only.
ENV_OVERRIDES = {
    "CLOCKWORK_REDIS_URL": "redis.url",
    "CLOCKWORK_VOLUME_ROOT": "volume_root",
    "CLOCKWORK_HOST": "deployment.host",
    "CLOCKWORK_PORT": "deployment.port",
    "CLOCKWORK_REPLAY_URL": "monitoring.replay.url",
}
REDIS_PASSWORD_FILE_ENV = "CLOCKWORK_REDIS_PASSWORD_FILE"

MODEL_VERSION_RE = re.compile(r"^v[0-9]+$")
DATA_VERSION_RE = re.compile(r"^v[0-9]+_[a-z0-9_]+$")

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
RelPath = Annotated[str, Field(min_length=1)]
# Columns the prediction and labelled logs add beside a dataset's features and label (shared.labelled).
LOG_COLUMNS = ("time", "request_id", "model_version", "probability", "predicted", "feedback_time")


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


class RegistryConfig(_Strict):
    dir: RelPath
    metadata_log: RelPath


class CoalesceConfig(_Strict):
    enabled: bool
    max_rows: PosInt
    max_open_iterations: Annotated[int, Field(ge=0)]


class DeploymentConfig(_Strict):
    model_version: Annotated[str, Field(pattern=MODEL_VERSION_RE.pattern)]
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


class SecurityConfig(_Strict):
    """The request side's defences. The API key itself is never here: see `api_key_from_env`."""

    predict_requires_key: bool  # /predict and /predict/batch keyed too (when a key is set); else open
    body_read_timeout_s: PosFloat  # a request body not all there by then: 408, connection closed
    lineage_concurrency: PosInt  # lineage lookups running at once (each in a worker thread)
    lineage_waiting: Annotated[int, Field(ge=0)]  # lookups queued behind them; beyond: 429 with Retry-After
    lineage_retry_after_s: PosInt


class Thresholds(_Strict):
    f1_drop: Probability
    error_rate_increase: Probability
    psi: PosFloat
    psi_bins: Annotated[int, Field(ge=2)]
    ks_pvalue: Probability
    chi2_pvalue: Probability


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

    @model_validator(mode="after")
    def _margin_in_units(self) -> GateConfig:
        if self.metric != "expected_cost" and self.margin > 1:
            raise ValueError(f"margin {self.margin} exceeds 1, the most {self.metric} can improve")
        return self


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
    cooldown_s: Annotated[float, Field(ge=0)]
    replay: ReplayConfig
    gate: GateConfig


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


class Settings(_Strict):
    volume_root: RelPath
    dataset: DatasetConfig
    data: DataConfig
    features: FeaturesConfig
    model_params: ModelParams
    training: TrainingConfig
    decision: DecisionConfig
    registry: RegistryConfig
    deployment: DeploymentConfig
    security: SecurityConfig
    monitoring: MonitoringConfig
    redis: RedisConfig
    console: ConsoleConfig
    # Set by the loader, not by the file: where the file was, so relative paths resolve from it.
    config_path: Path = Field(default=Path(DEFAULT_CONFIG), exclude=True)

    @property
    def project_root(self) -> Path:
        return self.config_path.resolve().parent

    @property
    def local_url(self) -> str:
        """The inference service of this config as a client on this host reaches it (a wildcard bind -> loopback)."""
        host = self.deployment.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.deployment.port}"

    @property
    def replay_url(self) -> str:
        """Where replay sends traffic: monitoring.replay.url, else this host's inference (`local_url`)."""
        return self.monitoring.replay.url or self.local_url

    @property
    def volume(self) -> Path:
        root = Path(self.volume_root)
        return root if root.is_absolute() else self.project_root / root

    @model_validator(mode="after")
    def _follows_the_dataset(self) -> Settings:
        """The day-2 recipes name dataset features of the right kind; no feature takes a log column's name."""
        ds = self.dataset
        taken = sorted({*ds.feature_names, ds.label.name} & set(LOG_COLUMNS))
        if taken:
            raise ValueError(f"dataset: {taken} name the logs' own columns {list(LOG_COLUMNS)}; rename the feature")
        for i, r in enumerate(self.data.day2.recipes):
            where = f"data.day2.recipes.{i}.column"
            if r.column not in ds.feature_names:
                raise ValueError(f"{where}: {r.column!r} is not a feature of dataset {ds.name} ({ds.feature_names})")
            col = ds.column(r.column)
            if col.kind == "numeric" and r.kind == "levels":
                raise ValueError(f"{where}: {r.column} is numeric; kind levels is for a categorical feature")
            if isinstance(col, CategoricalColumn):
                if r.kind != "levels":
                    raise ValueError(f"{where}: {r.column} is categorical; kind {r.kind} is for a numeric feature")
                if r.level not in col.levels:
                    where = f"data.day2.recipes.{i}.level"
                    raise ValueError(f"{where}: {r.level!r} is not a level of {r.column} {col.levels}")
        return self

    def section(self, name: str) -> dict:
        """A config section as plain data (recorded in metadata and manifest entries)."""
        return getattr(self, name).model_dump(mode="json")


def redact_url(url: str) -> str:
    """A URL fit for a log line: the password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


API_KEY_ENV = "CLOCKWORK_API_KEY"
API_KEY_FILE_ENV = "CLOCKWORK_API_KEY_FILE"


def api_key_from_env(env: dict[str, str] | None = None) -> str | None:
    """The API key from $CLOCKWORK_API_KEY, else from the secrets file named by $CLOCKWORK_API_KEY_FILE (its
    content, surrounding whitespace removed); None when neither is set (the keyed routes are then open).
    Raises ConfigError naming the variable for an empty key or an unreadable file."""
    env = dict(os.environ) if env is None else env
    if env.get(API_KEY_ENV) is not None:
        key, where = env[API_KEY_ENV].strip(), f"environment {API_KEY_ENV}"
    elif env.get(API_KEY_FILE_ENV):
        path = Path(env[API_KEY_FILE_ENV])
        where = f"{API_KEY_FILE_ENV}={path}"
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read the API key file: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{where}: the API key file is not UTF-8 text") from e
    else:
        return None
    if not key:
        raise ConfigError(f"{where}: the API key is empty (unset the variable to run without a key)")
    if not key.isascii() or not key.isprintable():
        raise ConfigError(f"{where}: the API key must be printable ASCII (it travels in an HTTP header)")
    return key


def resolve_config_path(cli_value: str | os.PathLike | None = None) -> Path:
    """Option first, then $CLOCKWORK_CONFIG, then ./config.yaml."""
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _apply_env(raw: dict, env: dict[str, str]) -> None:
    for var, dotted in ENV_OVERRIDES.items():
        if var not in env:
            continue
        value: object = env[var]
        if dotted == "deployment.port":
            try:
                value = int(env[var])
            except ValueError:
                raise ConfigError(f"environment {var}={env[var]!r}: must be an integer port") from None
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[leaf] = value
    if env.get(REDIS_PASSWORD_FILE_ENV) and isinstance(raw.get("redis"), dict):
        from urllib.parse import quote, urlsplit, urlunsplit

        password = quote(_read_secret(REDIS_PASSWORD_FILE_ENV, env[REDIS_PASSWORD_FILE_ENV]), safe="")
        parts = urlsplit(str(raw["redis"].get("url", "")))
        userinfo, _, host = parts.netloc.rpartition("@")
        raw["redis"]["url"] = urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:{password}@{host}"))


def _read_secret(var: str, path: str) -> str:
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"environment {var}={path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    if not secret:
        raise ConfigError(f"environment {var}={path}: the file is empty")
    return secret


def load_settings(path: str | os.PathLike | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Load and validate config.yaml; raise ConfigError with one line naming file, key and reason."""
    cfg_path = resolve_config_path(path)
    env = dict(os.environ) if env is None else env
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: config file not found (set --config or {CONFIG_ENV})")
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{cfg_path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    except OSError as e:
        raise ConfigError(f"{cfg_path}: cannot read: {e.strerror}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: top level must be a mapping of sections, got {type(raw).__name__}")
    _apply_env(raw, env)
    raw["config_path"] = cfg_path
    try:
        return _validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{cfg_path}: {explain(e)}") from e


def _validate(raw: dict) -> Settings:
    # Strict types: "abc" or "50" is not accepted where a number is expected.
    raw = dict(raw)
    cfg_path = raw.pop("config_path")
    settings = Settings.model_validate(raw)
    return settings.model_copy(update={"config_path": Path(cfg_path)})


def load_settings_or_exit(path: str | os.PathLike | None = None) -> Settings:
    """For `main()`: one clear line on stderr and exit code 2 instead of a traceback."""
    try:
        return load_settings(path)
    except ConfigError as e:
        sys.stderr.write(f"config error: {e}\n")
        raise SystemExit(2) from None
