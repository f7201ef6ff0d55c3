"""Fault experiments on the request side of the inference service: the real process (`python -m
services.inference`) over HTTP, each with its ledger where it applies (answered = logged for /predict).

- an upload aborted mid-body is a client close (499 counted), not a 500; nothing logged as an error
- a body that does not arrive in time: 408 after security.body_read_timeout_s, connection closed
- a body that is not JSON: 415, nothing logged
- twelve clients looping on /lineage keep /predict at >= 0.8 of its throughput (bounded lookups, 429 beyond)
- keys: from the environment or a secrets file; 401 with WWW-Authenticate without them
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, free_port, registered_project, wait_for
from tests.faults.helpers import record_ledger

READING = {"type": "M", "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551.0,
           "torque_nm": 42.8, "tool_wear_min": 0.0}
KEY = "k-3f9a0c1e2b7d4a65"


@pytest.fixture(scope="module")
def template(prepped_template, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("faults") / "project"
    registered_project(prepped_template, dest)
    return dest


class Served:
    """`python -m services.inference` on a private copy of the project, on a free port; stderr kept."""

    def __init__(self, template: Path, dest: Path, *, security: dict | None = None, env: dict | None = None):
        shutil.copytree(template, dest)
        self.config = dest / "config.yaml"
        cfg = yaml.safe_load(self.config.read_text())
        cfg["security"].update(security or {})
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = dest / "stderr.log"
        self.log_dir = dest / "volumes" / cfg["deployment"]["prediction_log_dir"]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCKWORK_")}
        full_env |= {"CLOCKWORK_PORT": str(self.port), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.inference", "serve", "--config", str(self.config), "--instance-id", "f1"],
            cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=open(self.stderr_path, "wb"))
        wait_for(self._ready, 30, what="the service to be ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.stderr_path.read_text()
        try:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def prediction_lines(self) -> int:
        path = self.log_dir / "f1.jsonl"
        return len(path.read_bytes().splitlines()) if path.exists() else 0

    def counts(self, route: str) -> dict[str, float]:
        """{status: n} of clockwork_inference_requests for `route`, from /metrics."""
        out: dict[str, float] = {}
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith("clockwork_inference_requests_total{") and f'route="{route}"' in line:
                status = line.split('status="')[1].split('"')[0]
                out[status] = out.get(status, 0) + float(line.rsplit(" ", 1)[1])
        return out

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.stderr_path.read_text()


@pytest.fixture
def serve(template, tmp_path):
    started: list[Served] = []

    def start(**kwargs) -> Served:
        s = Served(template, tmp_path / f"p{len(started)}", **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_an_aborted_upload_is_counted_as_a_client_close_not_a_server_error(serve):
    svc = serve()
    ok = httpx.post(f"{svc.url}/predict", json=READING)
    assert ok.status_code == 200
    for _ in range(5):
        sock = raw_request(svc.port, "POST /predict HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                     "Content-Length: 1000\n", b'{"type": "M", "air_temp')
        time.sleep(0.05)
        sock.close()
    wait_for(lambda: svc.counts("/predict").get("499") == 5, 10, what="five client closes counted")
    counts = svc.counts("/predict")
    assert "500" not in counts and counts.get("200") == 1, counts
    assert httpx.post(f"{svc.url}/predict", json=READING).status_code == 200  # the service is fine
    assert svc.prediction_lines == 2  # ledger: two answered, two logged; the aborted ones left nothing
    stderr = svc.stop()
    assert "Traceback" not in stderr and " ERROR " not in stderr, stderr[-2000:]


def test_a_body_that_does_not_arrive_gets_408_after_the_timeout(serve):
    svc = serve(security={"body_read_timeout_s": 1.0})
    started = time.monotonic()
    sock = raw_request(svc.port, "POST /predict HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                 "Content-Length: 200\n", b'{"type": "M"')
    answer = read_all(sock)  # the server closes the connection after the 408
    elapsed = time.monotonic() - started
    sock.close()
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 408"), answer[:300]
    assert b"connection: close" in head
    assert b"security.body_read_timeout_s" in answer
    assert 0.9 <= elapsed < 4.0, elapsed
    # a body trickling in within the deadline is answered as usual
    body = httpx.Request("POST", "/", json=READING).content
    sock = raw_request(svc.port, f"POST /predict HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                 f"Content-Length: {len(body)}\nConnection: close\n", body[:20])
    time.sleep(0.3)
    sock.sendall(body[20:])
    assert read_all(sock).startswith(b"HTTP/1.1 200")
    sock.close()
    assert svc.counts("/predict") == {"408": 1, "200": 1} and svc.prediction_lines == 1
    stderr = svc.stop()
    assert "Traceback" not in stderr, stderr[-2000:]


def test_a_body_that_is_not_json_gets_415_and_nothing_is_logged(serve):
    svc = serve()
    for path in ("/predict", "/predict/batch", "/feedback"):
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
            r = httpx.post(f"{svc.url}{path}", content=b'{"a": 1}', headers=headers)
            assert r.status_code == 415, (path, headers, r.text)
            assert "application/json" in r.json()["detail"]
    assert httpx.post(f"{svc.url}/predict", json=READING,
                      headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    assert svc.prediction_lines == 1
    doc = httpx.get(f"{svc.url}/openapi.json").json()
    for path in ("/predict", "/predict/batch", "/feedback"):
        assert {"408", "413", "415", "422"} <= set(doc["paths"][path]["post"]["responses"]), path


LOOPER = textwrap.dedent("""
    import sys, threading, time, http.client
    port, seconds, n = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    counts, stop = {}, time.monotonic() + seconds
    def loop():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:  # a careless client: no pause, Retry-After ignored
            conn.request("GET", "/lineage/ffffffffffffffff-0000001", headers={"X-API-Key": sys.argv[4]})
            r = conn.getresponse(); r.read()
            counts[r.status] = counts.get(r.status, 0) + 1
    threads = [threading.Thread(target=loop) for _ in range(n)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(counts)
""")


@pytest.mark.slow
def test_twelve_lineage_loopers_do_not_starve_predict(serve):
    """/predict throughput with 12 clients looping on /lineage (over a 90 MB prediction log) >= 0.8 of alone: the
    lookups go through the lineage index (the first one builds it), so each costs what was appended since."""
    from bench.loadgen import run_load

    svc = serve(env={"CLOCKWORK_API_KEY": KEY})
    line = httpx.post(f"{svc.url}/predict", json=READING).json()
    record = (svc.log_dir / "f1.jsonl").read_bytes().splitlines()[0] + b"\n"
    (svc.log_dir / "other.jsonl").write_bytes(record * (90_000_000 // len(record)))
    assert line["request_id"]
    t = time.monotonic()
    # the first lookup starts the lookup process and indexes the 90 MB log (seconds on a loaded machine)
    assert httpx.get(f"{svc.url}/lineage/ffffffffffffffff-0000001", headers={"X-API-Key": KEY},
                     timeout=120).status_code == 404
    lookup_s = time.monotonic() - t
    t = time.monotonic()
    assert httpx.get(f"{svc.url}/lineage/{line['request_id']}", headers={"X-API-Key": KEY},
                     timeout=30).status_code == 200
    indexed_s = time.monotonic() - t
    assert indexed_s < 0.5, f"a lookup over an indexed 90 MB log took {indexed_s:.3f}s"  # a scan: 0.2-0.4 s
    body = httpx.Request("POST", "/", json=READING).content
    seconds = 3.0

    def predict_rps() -> float:
        r = run_load(host="127.0.0.1", port=svc.port, path="/predict", body=body, connections=16, seconds=seconds)
        assert r.errors == 0, r.statuses
        return r.requests / r.seconds

    before_lines = svc.prediction_lines
    alone, contended, looped = [], [], []
    for _ in range(3):  # alternating rounds, medians: the noise of a shared machine hits both alike
        alone.append(predict_rps())
        loopers = subprocess.Popen([sys.executable, "-c", LOOPER, str(svc.port), str(seconds + 1.5), "12", KEY],
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        contended.append(predict_rps())
        looped.append(loopers.communicate(timeout=60)[0].strip())
    # two robust views of one noisy machine (other work on it can ruin a round): the better must hold
    ratio = max(statistics.median(contended) / statistics.median(alone),
                statistics.median(c / a for c, a in zip(contended, alone, strict=True)))
    record_ledger("12 lineage loopers", predict_alone_rps=round(statistics.median(alone)),
                  predict_with_loopers_rps=round(statistics.median(contended)), ratio=round(ratio, 2),
                  lookup_indexed_s=round(indexed_s, 4))
    print(f"first lookup {lookup_s:.3f}s, then {indexed_s:.3f}s; /predict alone {[round(x) for x in alone]} req/s, "
          f"with 12 lineage loopers {[round(x) for x in contended]} req/s: ratio {ratio:.2f}; answers {looped}")
    counts = svc.counts("/predict")
    assert svc.prediction_lines - before_lines == counts["200"] - 1  # ledger: answered = logged
    lineage = svc.counts("/lineage")
    assert lineage.get("404", 0) > 0 and "500" not in lineage, lineage
    assert ratio >= 0.8, f"/predict kept only {ratio:.2f} of its throughput"  # 0.96-1.0 measured with the index


def test_keys_come_from_the_environment_or_a_secrets_file_and_guard_feedback_and_lineage(serve, tmp_path):
    secret = tmp_path / "api_key"
    secret.write_text(KEY + "\n")
    svc = serve(env={"CLOCKWORK_API_KEY_FILE": str(secret)})
    rid = httpx.post(f"{svc.url}/predict", json=READING).json()["request_id"]  # /predict open by default
    label = {"request_id": rid, "label": 1}
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {KEY}"}):
        r = httpx.post(f"{svc.url}/feedback", json=label, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), (headers, r.text)
        assert httpx.get(f"{svc.url}/lineage/{rid}", headers=headers).status_code == 401
    assert httpx.post(f"{svc.url}/feedback", json=label, headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.post(f"{svc.url}/feedback", json=label, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    r = httpx.get(f"{svc.url}/lineage/{rid}", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["request_id"] == rid and len(r.json()["feedback"]) == 2  # ledger
    doc = httpx.get(f"{svc.url}/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerAuth"}
    assert "security" not in doc["paths"]["/predict"]["post"]
    for path, method in (("/feedback", "post"), ("/lineage/{request_id}", "get")):
        op = doc["paths"][path][method]
        assert op["security"] == [{"ApiKeyHeader": []}, {"BearerAuth": []}] and "401" in op["responses"]
    assert KEY not in svc.config.read_text() and KEY not in svc.stop()


def test_predict_is_keyed_when_config_says_so(serve):
    svc = serve(security={"predict_requires_key": True}, env={"CLOCKWORK_API_KEY": KEY})
    assert httpx.post(f"{svc.url}/predict", json=READING).status_code == 401
    assert httpx.post(f"{svc.url}/predict/batch", json={"readings": [READING]}).status_code == 401
    assert httpx.post(f"{svc.url}/predict", json=READING, headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.get(f"{svc.url}/health").status_code == 200  # probes stay open
    assert svc.prediction_lines == 1 and svc.counts("/predict") == {"401": 1, "200": 1}
