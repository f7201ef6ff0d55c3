"""config.yaml: the one validated settings object every service loads at start-up.

`load_settings(path)` returns `Settings` or raises `ConfigError` whose message is one line naming the
file, the key and the reason. Services call `load_settings_or_exit` from `main()`.
Only deployment values may come from the environment (see ENV_OVERRIDES); the Redis password may come from
a file named by $CLOCKWORK_REDIS_PASSWORD_FILE (it goes into redis.url; no secret lives in config.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from shared.dataset import CategoricalColumn, DatasetConfig
from shared.errors import ConfigError, explain
from shared.sections import (  # noqa: F401 - re-exported: the config schema, imported from here
    DATA_VERSION_RE,
    LOG_COLUMNS,
    MODEL_VERSION_RE,
    PARQUET_COLUMNS,
    BootstrapConfig,
    CoalesceConfig,
    ConsoleConfig,
    DataConfig,
    DataVersion,
    Day2Config,
    DecisionConfig,
    DeploymentConfig,
    DriftRecipe,
    DriftTestConfig,
    FeaturesConfig,
    Fraction,
    GateConfig,
    LogsConfig,
    ModelParams,
    MonitoringConfig,
    PosFloat,
    PosInt,
    PrepVersions,
    Probability,
    RedisConfig,
    RegistryConfig,
    RelPath,
    ReplayConfig,
    SecurityConfig,
    Thresholds,
    TrainingConfig,
    _Strict,
)

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
    logs: LogsConfig
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
        taken = sorted(set(ds.feature_names) & set(PARQUET_COLUMNS))
        if taken:
            raise ValueError(
                f"dataset: features {taken} name columns of the logs' Parquet form {list(PARQUET_COLUMNS)}; rename them"
            )
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


# Keys an earlier config.yaml had, and what replaced them: an old file is refused with the way forward.
RETIRED_KEYS = {
    "monitoring.thresholds.ks_pvalue": "a feature's drift is judged on adjusted p-values: monitoring.drift.alpha "
    "and monitoring.drift.correction",
    "monitoring.thresholds.chi2_pvalue": "a feature's drift is judged on adjusted p-values: monitoring.drift.alpha "
    "and monitoring.drift.correction",
    "deployment.input_ranges": "each numeric feature's range in the dataset section (dataset.features)",
}


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
        raise ConfigError(f"{cfg_path}: {explain(e, retired=RETIRED_KEYS)}") from e


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
