"""Monitor cycles over real logs: metrics vs training, drift, reports and the retrain trigger (real Redis)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from services.monitor.monitor import Monitor
from services.monitor.state import load_state, save_state
from shared.errors import MonitorBusyError
from shared.labelled import committed_length, labelled_file
from shared.paths import Paths, RedisKeys
from shared.queue import RetrainQueue
from shared.schemas import parse_retrain_message, parse_utc
from tests.monitor.helpers import day2, write_traffic

UNTOUCHED = {"drift:rotational_speed_rpm", "drift:torque_nm", "drift:tool_wear_min"}


def with_monitoring(settings, **changes):
    return settings.model_copy(update={"monitoring": settings.monitoring.model_copy(update=changes)})


def age_last_trigger(paths, redis_client, settings, *, seconds: float) -> None:
    """Move the recorded last trigger back in time, in the state file and in Redis (as if time passed)."""
    state = load_state(paths.monitor_state)
    old = (parse_utc(state.last_trigger.time) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state.last_trigger.time = old
    save_state(paths.monitor_state, state)
    key = RedisKeys.from_settings(settings).monitor_cooldown
    if redis_client.get(key) is not None:
        redis_client.set(key, json.dumps(json.loads(redis_client.get(key)) | {"time": old}))


def queued(redis_client, settings) -> list:
    return [parse_retrain_message(m) for m in redis_client.lrange(RedisKeys.from_settings(settings).retrain_queue, 0, -1)]


def test_natural_traffic_flags_air_temperature_and_reports_metrics_against_training(trained, paths, redis_client):
    write_traffic(paths, day2(paths, "natural").iloc[-1000:])
    report = Monitor(settings=trained, redis_client=redis_client).cycle()
    assert "drift:air_temperature_k" in report.fired
    assert not UNTOUCHED & set(report.fired)
    drift = report.drift
    assert drift.n_production == 500 and drift.reference.data_version == "v3_split"
    assert drift.reference.path == "data/processed/v3_split/train.csv"
    perf = report.performance["v1"]
    assert perf.window.rows == 500 and perf.label_coverage.coverage == 1.0
    assert perf.training.f1 > 0.5 and perf.production.f1 is not None
    assert set(perf.checks) == {"f1", "error_rate"}


def test_reports_are_written_and_load_back_unchanged(trained, paths, redis_client):
    write_traffic(paths, day2(paths, "torque_shift").iloc[:600])
    report = Monitor(settings=trained, redis_client=redis_client).cycle()
    json_path = paths.volume / report.paths.json_file
    html_path = paths.volume / report.paths.html_file
    assert json.loads(json_path.read_text()) == report.model_dump(mode="json")
    assert json.loads((paths.reports_dir / "latest.json").read_text()) == report.model_dump(mode="json")
    page = html_path.read_text()
    assert page == (paths.reports_dir / "latest.html").read_text()
    assert page.count("<img ") == 2 and "data:image/png;base64," in page
    for name in ("torque_nm", "air_temperature_k", "ks_2samp", "chi2_contingency", "psi"):
        assert name in page


def test_one_condition_sends_exactly_one_message_until_cooldown_or_a_new_version(trained, paths, redis_client):
    from services.trainer.train import train_and_register

    settings = with_monitoring(trained, cooldown_s=600.0)
    monitor = Monitor(settings=settings, redis_client=redis_client)
    write_traffic(paths, day2(paths, "torque_shift").iloc[:600])
    first = monitor.cycle()
    assert first.trigger.status == "sent"
    assert {"drift:torque_nm", "performance:f1"} <= set(first.fired)
    msgs = queued(redis_client, settings)
    assert len(msgs) == 1
    msg = msgs[0]
    assert msg.id == first.trigger.message_id and msg.include_production
    assert RetrainQueue.from_settings(settings, redis=redis_client).job(msg.id)["status"] == "queued"
    ev = msg.evidence
    assert {c["name"] for c in ev["checks"]} == set(first.fired)
    assert (paths.volume / ev["report"]).is_file() and ev["serving_version"] == "v1"
    assert ev["window"]["labelled"]["rows"] == 500 and ev["window"]["drift"]["rows"] == 500
    torque = next(c for c in ev["checks"] if c["name"] == "drift:torque_nm")
    assert torque["effect_size"]["psi"] > 0.2 and torque["p_value"] < 0.001 and torque["n_production"] == 500

    # The same condition again, and again with new traffic: nothing more.
    second = monitor.cycle()
    write_traffic(paths, day2(paths, "torque_shift").iloc[600:700], start=600)
    third = monitor.cycle()
    assert second.trigger.status == third.trigger.status == "suppressed"
    assert len(queued(redis_client, settings)) == 1

    # Redis lost its copy of the cooldown: the state file still remembers.
    redis_client.delete(RedisKeys.from_settings(settings).monitor_cooldown)
    assert monitor.cycle().trigger.status == "suppressed"
    assert len(queued(redis_client, settings)) == 1

    # After the cooldown: one more.
    age_last_trigger(paths, redis_client, settings, seconds=601)
    assert monitor.cycle().trigger.status == "sent"
    assert monitor.cycle().trigger.status == "suppressed"
    assert len(queued(redis_client, settings)) == 2

    # A new model version serves: the condition is new even inside the cooldown.
    train_and_register(trained, trigger={"kind": "command", "command": "test"})
    write_traffic(paths, day2(paths, "torque_shift").iloc[700:1300], version="v2", start=700)
    report = monitor.cycle()
    assert report.serving_version == "v2" and report.trigger.status == "sent"
    assert len(queued(redis_client, settings)) == 3
    assert load_state(paths.monitor_state).last_trigger.serving_version == "v2"
    assert json.loads(redis_client.get(RedisKeys.from_settings(settings).monitor_cooldown))["message_id"] == report.trigger.message_id


def test_an_idle_loop_never_sends_the_same_evidence_again_and_logs_no_fired_checks(trained, paths, redis_client,
                                                                                   caplog):
    """Nothing read since the message: past the cooldown it is still the same window, so nothing is sent, and
    the loop's idle cycles do not log the same fired checks at info level; new traffic after the cooldown sends."""
    import logging

    from services.monitor.monitor import run_loop

    settings = with_monitoring(trained, cooldown_s=600.0)
    monitor = Monitor(settings=settings, redis_client=redis_client)
    write_traffic(paths, day2(paths, "torque_shift").iloc[:600])
    first = monitor.cycle()
    assert first.trigger.status == "sent" and load_state(paths.monitor_state).last_trigger.lines_read == 1200
    age_last_trigger(paths, redis_client, settings, seconds=601)
    caplog.clear()  # only the idle loop's records below
    with caplog.at_level(logging.INFO, logger="services.monitor"):
        assert run_loop(monitor, interval_s=0.0, max_cycles=3) == 3
    assert len(queued(redis_client, settings)) == 1
    latest = json.loads((paths.reports_dir / "latest.json").read_text())
    assert latest["trigger"]["status"] == "suppressed" and "nothing read since message" in latest["trigger"]["reason"]
    assert latest["fired"] == first.fired  # the report still says what stands
    assert not [r for r in caplog.records if "fired" in r.getMessage() or "suppressed" in r.getMessage()]
    write_traffic(paths, day2(paths, "torque_shift").iloc[600:700], start=600)
    assert monitor.cycle().trigger.status == "sent"
    assert len(queued(redis_client, settings)) == 2


def test_a_new_check_firing_is_a_new_condition(trained, paths, redis_client):
    monitor = Monitor(settings=trained, redis_client=redis_client)
    write_traffic(paths, day2(paths, "natural").iloc[:300], labels=False)
    first = monitor.cycle()
    assert first.trigger.status == "sent" and "drift:torque_nm" not in first.fired
    write_traffic(paths, day2(paths, "torque_shift").iloc[300:800], start=300, labels=False)
    second = monitor.cycle()
    assert "drift:torque_nm" in second.fired and second.trigger.status == "sent"
    assert len(queued(redis_client, trained)) == 2


def test_redis_down_sends_nothing_and_retries_next_cycle(trained, paths, redis_server, redis_client):
    import redis

    write_traffic(paths, day2(paths, "torque_shift").iloc[:300], labels=False)
    dead = redis.Redis.from_url(f"redis://127.0.0.1:{redis_server.port + 1 if redis_server.port < 65535 else 1}/0",
                                socket_connect_timeout=0.5)
    report = Monitor(settings=trained, redis_client=dead).cycle()
    assert report.trigger.status == "error"
    assert load_state(paths.monitor_state).last_trigger is None
    report = Monitor(settings=trained, redis_client=redis_client).cycle()
    assert report.trigger.status == "sent" and len(queued(redis_client, trained)) == 1


def test_performance_checks_wait_for_enough_labels(trained, paths, redis_client):
    write_traffic(paths, day2(paths, "torque_shift").iloc[:300], labels=False)
    report = Monitor(settings=trained, redis_client=redis_client).cycle()
    checks = report.performance["v1"].checks
    assert checks["f1"].status == checks["error_rate"].status == "too_few_labels"
    coverage = report.performance["v1"].label_coverage
    assert coverage.model_dump() == {"predictions": 300, "labelled": 0, "pending": 300, "coverage": 0.0}


def test_quiet_loop_cycles_write_no_per_cycle_files(trained, paths, redis_client):
    monitor = Monitor(settings=trained, redis_client=redis_client)
    write_traffic(paths, day2(paths, "natural").iloc[:50])
    monitor.cycle(quiet_reports=True)
    before = sorted(p.name for p in paths.reports_dir.iterdir())
    report = monitor.cycle(quiet_reports=True)
    assert sorted(p.name for p in paths.reports_dir.iterdir()) == before
    assert json.loads((paths.reports_dir / "latest.json").read_text())["created_at"] == report.created_at


def test_a_second_monitor_on_the_same_volume_is_refused(trained, paths):
    from services.monitor.monitor import monitor_lock

    with monitor_lock(paths):
        with pytest.raises(MonitorBusyError, match="another monitor"):
            Monitor(settings=trained, redis_client=None).cycle()


def test_monitor_cli_once_runs_one_cycle(trained, paths, redis_server, redis_client, monkeypatch):
    from services.monitor.__main__ import main

    write_traffic(paths, day2(paths, "natural").iloc[:300])
    monkeypatch.setenv("CLOCKWORK_REDIS_URL", redis_server.url)
    assert main(["--config", str(trained.config_path), "--once"]) == 0
    assert committed_length(Paths.from_settings(trained)) == (labelled_file(paths).stat().st_size, 300)
    assert main(["--config", str(trained.config_path), "lineage", "no-such-id"]) == 1


def test_the_loop_runs_bounded_and_stops_on_request(trained, paths, redis_client):
    import threading

    from services.monitor.monitor import run_loop

    write_traffic(paths, day2(paths, "natural").iloc[:50])
    monitor = Monitor(settings=trained, redis_client=redis_client)
    assert run_loop(monitor, interval_s=0.01, max_cycles=2) == 2
    assert load_state(paths.monitor_state).cycles == 2
    stop = threading.Event()
    stop.set()
    assert run_loop(monitor, interval_s=0.01, stop=stop) == 0


def test_old_cycle_reports_are_pruned_to_the_configured_count(paths):
    from services.monitor import report as report_mod

    paths.reports_dir.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        for suffix in (".json", ".html"):
            (paths.reports_dir / f"report-2026010{i}T000000000000Z{suffix}").write_text("x")
    (paths.reports_dir / "latest.html").write_text("x")
    removed = report_mod.prune(paths, keep=2)
    assert len(removed) == 6
    left = sorted(p.name for p in paths.reports_dir.iterdir())
    assert left == ["latest.html", "report-20260103T000000000000Z.html", "report-20260103T000000000000Z.json",
                    "report-20260104T000000000000Z.html", "report-20260104T000000000000Z.json"]
