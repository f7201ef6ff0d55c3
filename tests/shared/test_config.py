"""config.yaml: one validated settings object; any error stops with one line naming file, key, reason."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from shared.config import load_settings
from shared.errors import ConfigError
from tests.conftest import ROOT, write_project


def _edit(path, mutate):
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_repository_config_is_valid():
    s = load_settings(ROOT / "config.yaml", env={})
    assert s.volume == ROOT / "volumes"
    assert s.data.train_rows + s.data.production_rows == 10000


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_settings(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    "mutate, key, reason",
    [
        (lambda c: c["model_params"].update(n_estimators="abc"), "model_params.n_estimators", "integer"),
        (lambda c: c["data"].update(train_rows=-5), "data.train_rows", "greater than 0"),
        (lambda c: c["training"].update(validation_fraction=1.5), "training.validation_fraction", "less than 1"),
        (lambda c: c["deployment"].update(extra_key=1), "deployment.extra_key", "unknown key"),
        (lambda c: c.pop("redis"), "redis", "required key missing: redis"),
        (lambda c: c["deployment"].update(model_version="../v1"), "deployment.model_version", "pattern"),
        (lambda c: c["model_params"].update(algorithm="xgboost"), "model_params.algorithm", "random_forest"),
        (lambda c: c["deployment"].update(input_ranges={"torque_nm": [0, 200]}), "deployment.input_ranges",
         "unknown key"),
        (lambda c: c["data"]["day2"]["recipes"][0].update(column="humidity"), "data.day2.recipes.0.column",
         "'humidity' is not a feature of dataset ai4i2020"),
        (lambda c: c["data"]["day2"]["recipes"][1].update(column="type"), "data.day2.recipes.1.column",
         "type is categorical; kind scale is for a numeric feature"),
        (lambda c: c["data"]["day2"]["recipes"].append({"name": "more_h", "column": "type", "kind": "levels",
                                                         "level": "X", "share": 0.5}),
         "data.day2.recipes.3.level", "'X' is not a level of type"),
        (lambda c: c["dataset"]["features"][0].update(name="time"), "dataset: ['time'] name the logs' own columns",
         "rename the feature"),
        (lambda c: c["data"]["day2"]["recipes"][0].update(kind="levels"), "data.day2.recipes.0",
         "kind levels needs level and share"),
    ],
)
def test_invalid_value_names_file_key_and_reason(tmp_path, mutate, key, reason):
    path = write_project(tmp_path)
    _edit(path, mutate)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and key in message and reason in message


def test_invalid_yaml_names_the_line(tmp_path):
    path = write_project(tmp_path)
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_settings(path, env={})


def test_environment_overrides_deployment_values_only(tmp_path):
    path = write_project(tmp_path)
    s = load_settings(path, env={"CLOCKWORK_REDIS_URL": "redis://:secret@redis:6379/0", "CLOCKWORK_PORT": "9001",
                                 "CLOCKWORK_MODEL_PARAMS": "ignored"})
    assert s.redis.url == "redis://:secret@redis:6379/0"
    assert s.deployment.port == 9001
    with pytest.raises(ConfigError, match="CLOCKWORK_PORT"):
        load_settings(path, env={"CLOCKWORK_PORT": "eighty"})


def test_redis_password_comes_from_the_file_the_environment_names(tmp_path):
    path = write_project(tmp_path)
    secret = tmp_path / "redis_password"
    secret.write_text("s3cret/+:@x\n")
    env = {"CLOCKWORK_REDIS_URL": "redis://redis:6379/0", "CLOCKWORK_REDIS_PASSWORD_FILE": str(secret)}
    s = load_settings(path, env=env)
    assert s.redis.url == "redis://:s3cret%2F%2B%3A%40x@redis:6379/0"
    import redis

    assert redis.connection.parse_url(s.redis.url)["password"] == "s3cret/+:@x"
    # A password already in the URL is replaced, a user name kept.
    s = load_settings(path, env={"CLOCKWORK_REDIS_URL": "redis://app:old@redis:6379/0",
                                 "CLOCKWORK_REDIS_PASSWORD_FILE": str(secret)})
    assert s.redis.url == "redis://app:s3cret%2F%2B%3A%40x@redis:6379/0"


@pytest.mark.parametrize("make, reason", [(lambda p: None, "No such file"), (lambda p: p.write_text(" \n"), "empty"),
                                          (lambda p: p.mkdir(), "directory")])
def test_unusable_redis_password_file_names_the_file_and_why(tmp_path, make, reason):
    path = write_project(tmp_path)
    secret = tmp_path / "redis_password"
    make(secret)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={"CLOCKWORK_REDIS_PASSWORD_FILE": str(secret)})
    message = str(err.value)
    assert "\n" not in message
    assert f"CLOCKWORK_REDIS_PASSWORD_FILE={secret}" in message and reason in message


def test_redis_password_is_redacted_for_logs():
    from shared.config import redact_url

    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_paths_resolve_from_the_config_folder_not_the_working_directory(tmp_path, monkeypatch):
    path = write_project(tmp_path / "proj")
    monkeypatch.chdir(tmp_path)
    assert load_settings(path, env={}).volume == (tmp_path / "proj" / "volumes").resolve()


@pytest.mark.parametrize("service, args", [("prep", []), ("trainer", ["train"]), ("trainer", ["worker"]),
                                           ("inference", []), ("monitor", ["--once"])])
def test_every_service_stops_on_a_bad_config_with_one_line(tmp_path, service, args):
    path = write_project(tmp_path)
    _edit(path, lambda c: c["model_params"].update(n_estimators="abc"))
    proc = subprocess.run([sys.executable, "-m", f"services.{service}", *args, "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"config error: {path}: model_params.n_estimators: Input should be a valid integer (got 'abc')"]


def test_a_typo_names_the_unknown_key_first(tmp_path):
    path = write_project(tmp_path)
    _edit(path, lambda c: c["model_params"].update(n_estimatorz=c["model_params"].pop("n_estimators")))
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    message = str(err.value)
    assert message.startswith(f"{path}: model_params.n_estimatorz: unknown key"), message
    assert "required key missing: model_params.n_estimators" in message


def test_a_retired_key_says_what_replaced_it(tmp_path):
    """A config.yaml from before the drift correction keeps ks_pvalue: refused, naming monitoring.drift.alpha."""
    path = write_project(tmp_path)
    _edit(path, lambda c: c["monitoring"]["thresholds"].update(ks_pvalue=0.01))
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    message = str(err.value)
    assert message.startswith(f"{path}: monitoring.thresholds.ks_pvalue: unknown key (retired: "), message
    assert "monitoring.drift.alpha" in message
    _edit(path, lambda c: c["monitoring"]["thresholds"].pop("ks_pvalue"))
    _edit(path, lambda c: c["monitoring"]["thresholds"].update(ks_pvaleu=0.01))  # a typo is only unknown
    with pytest.raises(ConfigError, match=r"ks_pvaleu: unknown key$"):
        load_settings(path, env={})


def test_replay_follows_the_port_when_no_replay_url_is_set(tmp_path):
    path = write_project(tmp_path)
    assert load_settings(path, env={}).replay_url == "http://127.0.0.1:8000"
    assert load_settings(path, env={"CLOCKWORK_PORT": "8123"}).replay_url == "http://127.0.0.1:8123"
    moved = load_settings(path, env={"CLOCKWORK_PORT": "8123", "CLOCKWORK_REPLAY_URL": "http://nginx:8080"})
    assert moved.replay_url == "http://nginx:8080"
