"""Serving under faults, as experiments on a real `python -m services.inference` process.

A real full file system: a small tmpfs mounted as the volume's logs folder fills under concurrent /predict
and /feedback clients, then space is freed; the ledger must be exact (every 200 has exactly one valid log
line, every 503 none, every line parses) and /ready must follow (503 while full, 200 after).
A real SIGTERM: requests in flight on keep-alive connections (one half-sent, one on the wire of an idle
connection, clients in a loop) are all answered 200 and logged, and the process exits 0 within the grace.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from shared.schemas import FeedbackRecord, PredictionRecord
from tests.conftest import ROOT, free_port, registered_project
from tests.faults.helpers import record_ledger

FULL = "prediction log not writable: No space left on device"
FULL_FEEDBACK = "feedback log not writable: No space left on device"


def reading(key: int) -> bytes:
    """A valid reading whose air temperature (250.000 + key/1000) names the request in the log."""
    return json.dumps({"type": "M", "air_temperature_k": round(250 + key / 1000, 3), "process_temperature_k": 308.6,
                       "rotational_speed_rpm": 1551, "torque_nm": 42.8, "tool_wear_min": 7}).encode()


def key_of(record: PredictionRecord) -> int:
    return round((record.inputs["air_temperature_k"] - 250) * 1000)


@pytest.fixture(scope="module")
def project_template(prepped_template, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("faults") / "project"
    registered_project(prepped_template, dest)
    return dest


@pytest.fixture
def project(tmp_path, project_template) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(project_template, dest)
    return dest


class Inference:
    """`python -m services.inference serve` on a free port, from the project's config.yaml."""

    def __init__(self, project: Path, *, instance_id: str, grace_s: float = 3.0) -> None:
        cfg_path = project / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["deployment"]["drain_grace_s"] = grace_s
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.grace_s = grace_s
        self.port = free_port()
        self.volume = project / cfg["volume_root"]
        self.prediction_log = self.volume / cfg["deployment"]["prediction_log_dir"] / f"{instance_id}.jsonl"
        self.feedback_log = self.volume / cfg["deployment"]["feedback_log_dir"] / f"{instance_id}.jsonl"
        self.stderr_path = project / f"{instance_id}.stderr"
        env = dict(os.environ, CLOCKWORK_HOST="127.0.0.1", CLOCKWORK_PORT=str(self.port))
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.inference", "serve", "--config", str(cfg_path),
                 "--instance-id", instance_id],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
            )
        deadline = time.time() + 60
        while self.get("/ready")[0] != 200:
            if time.time() > deadline or self.proc.poll() is not None:
                self.kill()
                raise AssertionError(f"inference did not become ready:\n{self.stderr()}")
            time.sleep(0.1)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def get(self, path: str) -> tuple[int, str]:
        conn = self.connection()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def terminate(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def read_ledger(path: Path, model) -> list:
    """Every line of the log as `model`; fails on any torn or merged line."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a torn line: {data[-120:]!r}"
    return [model.model_validate_json(line) for line in data.splitlines()]


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}(?:_total)?(?:\{{{re.escape(labels)}\}})? ([0-9.e+-]+)$" if labels else (
        rf"^{re.escape(name)}(?:_total)? ([0-9.e+-]+)$")
    found = re.search(pattern, text, re.M)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


# --- a full disk ------------------------------------------------------------------------------------


class Clients:
    """Threads on keep-alive connections sending unique /predict readings, and /feedback for each 200."""

    def __init__(self, server: Inference, n: int, *, first_key: int = 0) -> None:
        self.server = server
        self.keys = itertools.count(first_key)
        self.predictions: list[tuple[int, int, dict]] = []  # (key, status, body)
        self.feedback: list[tuple[str, int, dict]] = []  # (request_id, status, body)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self) -> None:
        conn = self.server.connection()
        try:
            while not self.stop.is_set():
                key = next(self.keys)
                conn.request("POST", "/predict", reading(key), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = json.loads(resp.read())
                self.predictions.append((key, resp.status, body))
                if resp.status == 200 and key % 3 == 0:
                    fb = json.dumps({"request_id": body["request_id"], "label": key % 2}).encode()
                    conn.request("POST", "/feedback", fb, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    self.feedback.append((body["request_id"], resp.status, json.loads(resp.read())))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def count(self, status: int) -> int:
        return sum(1 for _, s, _ in self.predictions if s == status)


@pytest.fixture
def small_logs_disk(project):
    """The project's logs folder on a 256 KiB tmpfs (root only); unmounted after the test."""
    logs = project / "volumes" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(logs)
    logs.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(logs)], check=True,
                       capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or e
        pytest.skip(f"a small tmpfs cannot be mounted here (needs root and mount permission): {detail}")
    try:
        yield logs
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False, capture_output=True, timeout=10)


@pytest.mark.slow
def test_a_full_disk_is_answered_503_and_the_ledger_stays_exact(project, small_logs_disk):
    ballast = small_logs_disk / "ballast.bin"
    ballast.write_bytes(bytes(96 * 1024))  # what the operator frees later
    server = Inference(project, instance_id="full-1")
    ready_while_full: list[int] = []
    try:
        with Clients(server, 6) as clients:
            deadline = time.time() + 30
            while time.time() < deadline and not (clients.count(503) >= 50 and 503 in ready_while_full):
                if clients.count(503):
                    ready_while_full.append(server.get("/ready")[0])
                time.sleep(0.02)
        assert not clients.errors, clients.errors[:3]
        assert clients.count(503) >= 50, f"the disk never filled: {clients.count(200)} answered 200"
        status, body = server.get("/ready")
        assert status == 503 and FULL in json.loads(body)["detail"]  # still full, no traffic: still not ready
        status, text = server.get("/metrics")
        assert metric(text, "clockwork_inference_log_writable", 'log="prediction"') == 0
        assert metric(text, "clockwork_inference_log_write_failures", 'log="prediction"') >= 1
        refused = metric(text, "clockwork_inference_log_refused_records", 'log="prediction"')
        assert refused == clients.count(503)  # every refused record is a 503, and the other way round
        assert metric(text, "clockwork_inference_requests", 'model_version="v1",route="/predict",status="503"') == (
            clients.count(503))

        ballast.unlink()  # space is back: ready again on its own, without a request
        deadline = time.time() + 10
        while server.get("/ready")[0] != 200:
            assert time.time() < deadline, "/ready did not recover after space was freed"
            time.sleep(0.05)
        with Clients(server, 3, first_key=50_000) as after:
            while len(after.predictions) < 60:
                time.sleep(0.02)
        assert not after.errors and {s for _, s, _ in after.predictions} == {200}
        assert server.terminate(server.grace_s + 5) == 0
    finally:
        server.kill()

    answered = clients.predictions + after.predictions
    assert {s for _, s, _ in answered} == {200, 503}  # never a 500
    assert all(body["detail"] == FULL for _, s, body in answered if s == 503)
    records = read_ledger(server.prediction_log, PredictionRecord)
    by_key: dict[int, list[PredictionRecord]] = {}
    for r in records:
        by_key.setdefault(key_of(r), []).append(r)
    for key, status, body in answered:
        lines = by_key.get(key, [])
        if status == 200:
            assert [r.request_id for r in lines] == [body["request_id"]], f"request {key}: {lines}"
            assert lines[0].probability == body["failure_probability"]
        else:
            assert lines == [], f"request {key} was answered 503 but logged"
    assert len(records) == sum(1 for _, s, _ in answered if s == 200)
    record_ledger("full disk", predictions_answered_200=sum(1 for _, s, _ in answered if s == 200),
                  predictions_answered_503=sum(1 for _, s, _ in answered if s == 503), prediction_lines=len(records),
                  answered_500=sum(1 for _, s, _ in answered if s == 500), ready_503_polls=ready_while_full.count(503))

    feedback = clients.feedback + after.feedback
    assert {s for _, s, _ in feedback} <= {200, 503} and any(s == 200 for _, s, _ in feedback)
    assert all(body["detail"] == FULL_FEEDBACK for _, s, body in feedback if s == 503)
    labels = read_ledger(server.feedback_log, FeedbackRecord)
    assert sorted(r.request_id for r in labels) == sorted(rid for rid, s, _ in feedback if s == 200)
    assert ready_while_full.count(503) >= 1


# --- SIGTERM ----------------------------------------------------------------------------------------


def half_sent(server: Inference, key: int) -> tuple[http.client.HTTPConnection, bytes]:
    """A keep-alive connection that has answered one request and has sent the headers and half the body of the
    next; returns it and the rest of the body."""
    conn = server.connection()
    conn.request("POST", "/predict", reading(key), {"Content-Type": "application/json"})
    first = conn.getresponse()
    assert first.status == 200 and not first.will_close
    first_body = json.loads(first.read())
    body = reading(key + 1)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:20])
    return conn, body[20:], first_body


@pytest.mark.slow
def test_sigterm_answers_and_logs_every_request_in_flight_then_exits_0(project):
    server = Inference(project, instance_id="drain-1", grace_s=3.0)
    ledger: list[tuple[int, int, str | None, float]] = []  # (key, status, request_id, sent_at); status 0: error
    keys = itertools.count(1000, 10)
    killed_at = [float("inf")]

    def loop_client() -> None:  # a client sending request after request on one keep-alive connection
        conn = server.connection()
        try:
            while True:
                key = next(keys)
                try:
                    conn.request("POST", "/predict", reading(key), {"Content-Type": "application/json"})
                    sent = time.monotonic()
                    resp = conn.getresponse()
                    body = json.loads(resp.read())
                except OSError as e:
                    ledger.append((key, 0, type(e).__name__, sent))
                    return
                ledger.append((key, resp.status, body.get("request_id"), sent))
                if resp.will_close:  # the server said this answer is the connection's last
                    return
        finally:
            conn.close()

    try:
        slow = [half_sent(server, k) for k in range(0, 80, 10)]  # a request in flight, over the signal
        idle = server.connection()  # a keep-alive connection, idle when the signal comes ...
        idle.request("POST", "/predict", reading(500), {"Content-Type": "application/json"})
        assert idle.getresponse().read()
        loops = [threading.Thread(target=loop_client, daemon=True) for _ in range(4)]
        for t in loops:
            t.start()
        time.sleep(0.5)
        killed_at[0] = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the drain has begun (uvicorn looks for the signal every 0.1s)
        idle.request("POST", "/predict", reading(510), {"Content-Type": "application/json"})  # ... not closed yet
        time.sleep(0.2)  # the rest of each half-sent body arrives now, all together
        for conn, rest, _ in slow:
            conn.send(rest)
        answers = []
        for conn, _, _ in slow + [(idle, None, None)]:
            resp = conn.getresponse()
            answers.append((resp.status, resp.will_close, json.loads(resp.read())))
        for t in loops:
            t.join(10)
        code = server.proc.wait(server.grace_s + 2)
        exited_after = time.monotonic() - killed_at[0]
    finally:
        server.kill()

    assert code == 0, server.stderr()
    assert exited_after < server.grace_s + 1.0  # the grace, plus the lifespan's stop
    assert [(s, close) for s, close, _ in answers[:-1]] == [(200, True)] * len(slow)  # answered, then closed
    assert answers[-1][0] == 200  # sent on an idle keep-alive connection as the drain began: answered, not reset
    # Clients in a loop: every request answered 200 (none reset), the last one with Connection: close.
    assert ledger and {s for _, s, _, _ in ledger} == {200}, [x for x in ledger if x[1] != 200][:5]
    assert not any(t.is_alive() for t in loops)  # each stopped at its answer with Connection: close
    logged = {r.request_id: key_of(r) for r in read_ledger(server.prediction_log, PredictionRecord)}
    answered = {body["request_id"]: None for _, _, body in answers}
    answered.update({first["request_id"]: None for _, _, first in slow})
    answered.update({rid: k for k, s, rid, _ in ledger if s == 200})
    assert set(logged) >= set(answered)  # every 200 is logged (and the log holds nothing else but warm-up)
    assert all(logged[rid] == k for rid, k in answered.items() if k is not None)
    assert "drained: every request in flight was answered" in server.stderr()
    record_ledger("SIGTERM drain", in_flight_answered=len(answers) + len(slow), loop_requests=len(ledger),
                  answered_200=sum(1 for _, s, _, _ in ledger if s == 200), reset=sum(1 for _, s, _, _ in ledger if s == 0),
                  answered_logged=len(set(answered) & set(logged)), exit_code=code, exit_after_s=round(exited_after, 2))


@pytest.mark.slow
def test_a_drain_past_its_grace_is_cut_short_and_exits_1(project):
    server = Inference(project, instance_id="drain-2", grace_s=1.0)
    try:
        conn, _rest, _ = half_sent(server, 0)  # its body never completes
        time.sleep(0.3)  # let the server read the half-sent request (on a loaded machine it can lag)
        started = time.monotonic()
        code = server.terminate(server.grace_s + 5)
        took = time.monotonic() - started
    finally:
        server.kill()
    assert code == 1 and server.grace_s <= took < server.grace_s + 1.5
    # the half-sent request is cancelled, or (read by the server only after the drain began) its connection closed
    assert re.search(r"drain incomplete after 1\.0s \(deployment\.drain_grace_s\): cancelling [01] request\(s\), "
                     r"closing 1 connection\(s\)", server.stderr()), server.stderr()[-3000:]


def test_compose_gives_inference_more_time_to_stop_than_its_drain():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    period = compose["services"]["inference"].get("stop_grace_period")
    assert period, "docker-compose.yml: services.inference.stop_grace_period is missing (docker's default is 10s)"
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(period))
    assert parts and any(parts.groups()), f"stop_grace_period {period!r} is not a duration like 15s or 1m30s"
    seconds = int(parts[1] or 0) * 3600 + int(parts[2] or 0) * 60 + float(parts[3] or 0)
    grace = config["deployment"]["drain_grace_s"]
    assert seconds >= grace + 2, f"stop_grace_period {period} must exceed deployment.drain_grace_s {grace} (+2s)"
