"""Retrain messages: any payload is a MessageError or a message, never a crash; job ids cannot name other keys."""
from __future__ import annotations

import json

import pytest
import yaml

from shared.config import load_settings
from shared.errors import ConfigError, MessageError
from shared.paths import RedisKeys
from shared.schemas import MAX_MESSAGE_DEPTH, parse_retrain_message
from tests.conftest import write_project


@pytest.mark.parametrize("raw, reason", [
    ('{"id":"a","reason":"r","evidence":{"x":' + "[" * 5000 + "]" * 5000 + "}}", "nests 5002 levels deep"),
    ("[" * 50_000, "nests 50000 levels deep"),
    (json.dumps({"id": "a", "reason": "r", "evidence": {"blob": "x" * 70_000}}), "over the limit of 65536"),
    ('{"id":"a","reason":"r","data_version":"../../etc"}', "data_version: String should match pattern"),
    ('{"id":"a","reason":"r","evidence":{"n":' + "1" * 5000 + "}}", "not acceptable JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ('"just a string"', "must be a JSON object"),
    ('{"id":"bad id!","reason":"r"}', "id: String should match pattern"),
])
def test_every_bad_payload_is_a_message_error_naming_why(raw, reason):
    with pytest.raises(MessageError) as err:
        parse_retrain_message(raw)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


def test_depth_within_the_limit_and_brackets_in_strings_are_fine():
    nested: dict = {}
    node = nested
    for _ in range(MAX_MESSAGE_DEPTH - 3):
        node["k"] = {}
        node = node["k"]
    raw = json.dumps({"id": "ok-1", "reason": "[[[[{{{{ in text", "evidence": nested})
    assert parse_retrain_message(raw).id == "ok-1"


def test_the_size_limit_comes_from_the_caller():
    raw = json.dumps({"id": "a", "reason": "r", "evidence": {"blob": "x" * 1000}})
    assert parse_retrain_message(raw, max_bytes=2000).id == "a"
    with pytest.raises(MessageError, match="over the limit of 500"):
        parse_retrain_message(raw, max_bytes=500)


def test_no_job_id_can_name_a_lease_the_cooldown_or_a_queue(project):
    keys = RedisKeys.from_settings(project)
    ids = ["victim", "victim:lock", "monitor:last_trigger", "lock", "retrain", "retrain:processing", "x:y:z"]
    jobs = {keys.job(i) for i in ids}
    leases = {keys.job_lock(i) for i in ids}
    others = {keys.monitor_cooldown, keys.retrain_queue, keys.processing_queue, keys.dead_letter_queue}
    assert not jobs & leases and not jobs & others and not leases & others
    assert len(jobs) == len(leases) == len(ids)


@pytest.mark.parametrize("edit, reason", [
    ({"lease_key_prefix": "clockwork:job:lease"}, "lease_key_prefix 'clockwork:job:lease' lies inside job_key_prefix"),
    ({"monitor_key_prefix": "clockwork:job"}, "lies inside"),
    ({"dead_letter_queue": "clockwork:lease:dead"}, "dead_letter_queue 'clockwork:lease:dead' lies inside lease_key_prefix"),
])
def test_config_refuses_namespaces_that_nest(tmp_path, edit, reason):
    path = write_project(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["redis"].update(edit)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError, match=reason):
        load_settings(path, env={})
