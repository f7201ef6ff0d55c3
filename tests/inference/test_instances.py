"""Instance naming with deployment.workers, and /metrics naming the instance that answered."""
from __future__ import annotations

from services.inference.workers import worker_instance_ids


def test_worker_ids_suffix_the_given_id():
    assert worker_instance_ids("pump-a", 3) == ["pump-a-0", "pump-a-1", "pump-a-2"]


def test_worker_ids_fall_back_to_the_environment_then_host_and_pid(monkeypatch):
    monkeypatch.setenv("CLOCKWORK_INSTANCE_ID", "from-env")
    assert worker_instance_ids(None, 2) == ["from-env-0", "from-env-1"]
    monkeypatch.delenv("CLOCKWORK_INSTANCE_ID")
    ids = worker_instance_ids(None, 2)
    assert ids[0].endswith("-0") and ids[1].endswith("-1") and ids[0][:-2] == ids[1][:-2]


def test_worker_ids_stay_valid_for_a_long_base():
    ids = worker_instance_ids("x" * 100, 12)
    assert all(len(i) <= 100 for i in ids) and len(set(ids)) == 12


def test_characters_an_id_cannot_hold_are_replaced():
    assert worker_instance_ids("plant 3/line:a", 1) == ["plant_3_line_a-0"]


def test_metrics_name_the_instance(client):
    assert 'clockwork_inference_instance{instance_id="test-1"} 1.0' in client.get("/metrics").text
