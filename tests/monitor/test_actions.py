"""What was done, read back from the volume (and Redis): message -> job -> candidate -> gate -> pin -> swap."""
from __future__ import annotations

import pytest

from services.monitor.actions import ActionsReader, SentMessage
from services.monitor.report_actions import actions_section
from shared import deploylog
from shared.paths import Paths
from shared.pin import set_pin
from shared.queue import RetrainQueue
from shared.registry import Registry
from shared.schemas import utc_now

MESSAGE = "monitor-20260101T000000000000Z-abcd1234"
GATE = {
    "decision": "promote", "reason": "better", "metric": "expected_cost", "margin": 1.0, "auto_promote": True,
    "threshold": None, "decided_at": "2026-01-01T00:01:00.000000Z",
    "window": {"rows": 300, "positives": 7, "first_time": None, "last_time": None},
    "candidate": {"version_hint": "v2", "onnx_sha256": "x"}, "serving": {"version": "v1"},
    "difference": 120.5, "interval": {"low": 30.25, "high": 210.0, "confidence": 0.9, "samples": 2000, "seed": 1},
}
SHADOW = {"status": "ok", "reason": "agrees", "window": {"rows": 1000}, "agreement": 0.95, "disagreements": 50}


def register_candidate(paths: Paths, *, message_id: str = MESSAGE, gate: dict | None = GATE) -> str:
    """v1's model bytes registered again as the candidate a retrain message produced (its own metadata)."""
    registry = Registry(paths=paths)
    model_bytes, md = registry.load_verified("v1")
    md = {k: v for k, v in md.items() if k not in ("version", "created_at", "onnx_sha256", "onnx_bytes")}
    md["trigger"] = {"kind": "message", "message_id": message_id, "reason": "drift", "created_at": utc_now(),
                     "evidence": {"checks": [{"name": "drift:torque_nm"}], "report": "reports/report-x.json",
                                  "serving_version": "v1"}}
    md["gate"], md["shadow"] = gate, SHADOW
    return registry.register(model_bytes=model_bytes, metadata=md)["version"]


def test_a_promoted_and_swapped_candidate_reads_as_one_chain_with_its_ids(trained, paths, redis_client):
    version = register_candidate(paths)
    RetrainQueue.from_settings(trained, redis=redis_client).set_job(MESSAGE, status="done", attempts=1, worker="w1",
                                                                   started_at=utc_now(), finished_at=utc_now())
    set_pin(trained.config_path, version, paths=paths, actor="trainer-w1")
    deploylog.append_event(paths, event="swap", version=version, previous_version="v1", instance_id="inference-7")
    deploylog.append_event(paths, event="swap", version="v1", previous_version="v0", instance_id="other")

    report = ActionsReader(paths=paths, redis_client=redis_client).read(
        [SentMessage(message_id="monitor-later", time=utc_now(), checks=["drift:type"])])
    assert [c.message_id for c in report.chains] == ["monitor-later", MESSAGE]  # newest first
    later, chain = report.chains
    assert later.outcome == "sent" and later.candidate is None and later.message.checks == ["drift:type"]
    assert chain.outcome == "serving" and chain.candidate.version == version == "v2"
    assert chain.job.status == "done" and chain.job.worker == "w1"
    assert chain.message.checks == ["drift:torque_nm"] and chain.message.report == "reports/report-x.json"
    assert (chain.gate.decision, chain.gate.interval_low, chain.gate.window_rows) == ("promote", 30.25, 300)
    assert chain.shadow.agreement == 0.95
    assert [(p.event, p.previous_version, p.version, p.instance_id) for p in chain.pin] == [
        ("promote", "v1", "v2", "trainer-w1")]
    assert [(s.event, s.instance_id) for s in chain.swaps] == [("swap", "inference-7")]
    page = actions_section(report)
    for text in (MESSAGE, "monitor-later", "inference-7", "trainer-w1", "promote", "[30.250, 210.000]", "95.0%"):
        assert text in page, text
    assert report.problems == []
    assert type(report).model_validate_json(report.model_dump_json()) == report  # the JSON loads back unchanged
    # Rolled back: the chain says so, with the rollback row among its pin changes.
    from shared.pin import rollback

    rollback(trained.config_path, paths=paths)
    (chain,) = [c for c in ActionsReader(paths=paths, redis_client=redis_client).read([]).chains]
    assert chain.outcome == "rolled back" and [p.event for p in chain.pin] == ["promote", "rollback"]


@pytest.mark.parametrize("gate,outcome", [(GATE, "promote pending"), ({**GATE, "decision": "keep"}, "kept"),
                                          (None, "registered")])
def test_files_alone_give_the_chain_and_its_outcome(trained, paths, gate, outcome):
    register_candidate(paths, gate=gate)
    (chain,) = ActionsReader(paths=paths, redis_client=None).read([]).chains
    assert chain.outcome == outcome and chain.job is None and chain.pin == [] and chain.swaps == []
    assert "Redis job hash not read" in actions_section(ActionsReader(paths=paths).read([]))


def test_unreadable_sources_are_named_and_the_rest_still_reads(trained, paths, redis_server):
    import redis

    register_candidate(paths)
    paths.deployment_log.parent.mkdir(parents=True, exist_ok=True)
    paths.deployment_log.write_text("not,the,header\n")
    dead = redis.Redis.from_url(f"redis://127.0.0.1:{redis_server.port + 1}/0", socket_connect_timeout=0.3)
    report = ActionsReader(paths=paths, redis_client=dead).read([])
    assert [c.message_id for c in report.chains] == [MESSAGE] and report.chains[0].outcome == "promote pending"
    assert any(p.startswith("deployment log:") for p in report.problems)
    assert any("Redis job hashes not read" in p for p in report.problems)


def test_an_idle_loop_refreshes_the_page_only_when_what_was_done_moved_on(trained, paths, redis_client):
    from services.monitor.monitor import Monitor
    from tests.monitor.helpers import day2, write_traffic

    monitor = Monitor(settings=trained, redis_client=redis_client)
    write_traffic(paths, day2(paths, "torque_shift").iloc[:300], labels=False)
    sent = monitor.cycle(quiet_reports=True)
    message_id = sent.trigger.message_id
    latest = paths.reports_dir / "latest.html"
    assert sent.trigger.status == "sent" and message_id in latest.read_text()
    assert sent.actions.chains[0].outcome == "queued"
    files = sorted(p.name for p in paths.reports_dir.iterdir())
    RetrainQueue.from_settings(trained, redis=redis_client).set_job(message_id, status="running", worker="w9")
    moved = monitor.cycle(quiet_reports=True)
    assert moved.actions.chains[0].outcome == "running" and moved.paths.html_file == "reports/latest.html"
    page = latest.read_text()
    assert "<b>running</b>" in page and "w9" in page
    before = latest.stat().st_mtime_ns
    still = monitor.cycle(quiet_reports=True)
    assert still.paths.html_file is None and latest.stat().st_mtime_ns == before
    assert sorted(p.name for p in paths.reports_dir.iterdir()) == files  # no per-cycle files while idle


def test_a_shadow_veto_reads_back_in_the_gate_step_and_the_page(trained, paths, redis_client):
    shadow = {"verdict": "veto", "reason": "candidate expected cost 20.00 vs served 5.00 per 1,000: kept",
              "status": "ok", "cost_margin": 1.0, "min_positives": 5, "labelled_rows": 400, "labelled_positives": 9}
    register_candidate(paths, gate={**GATE, "decision": "keep", "shadow": shadow})
    (chain,) = ActionsReader(paths=paths, redis_client=redis_client).read([]).chains
    assert chain.outcome == "kept" and (chain.gate.shadow_verdict, chain.gate.shadow_reason) == ("veto", shadow["reason"])
    assert "shadow <b>veto</b>: candidate expected cost 20.00 vs served 5.00" in actions_section(
        ActionsReader(paths=paths, redis_client=redis_client).read([]))
    # a decision recorded before the gate consulted the shadow has no such step
    assert register_candidate(paths, message_id="older", gate=GATE)
    older = [c for c in ActionsReader(paths=paths, redis_client=redis_client).read([]).chains if c.message_id == "older"]
    assert older[0].gate.shadow_verdict is None
