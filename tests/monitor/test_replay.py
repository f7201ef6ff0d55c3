"""Replay: paced /predict calls, each label posted to /feedback after the delay, bounded, errors counted."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.monitor.replay import load_dataset, replay
from shared.errors import NotFoundError, ReplayError
from shared.paths import Paths
from tests.conftest import free_port


class Recorder(BaseHTTPRequestHandler):
    """A stand-in API that records what arrives (the real one is used in test_e2e)."""

    calls: list = []
    fail_every = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = len(self.calls)
        self.calls.append((time.monotonic(), self.path, body))
        n_predict = sum(1 for c in self.calls if c[1] == "/predict")
        if self.path == "/predict" and self.fail_every and n_predict % self.fail_every == 0:
            self.send_response(422)
            self.end_headers()
            return
        out = {"request_id": f"r{n}"} if self.path == "/predict" else {"recorded": True}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    Recorder.calls = []
    Recorder.fail_every = 0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_replay_paces_requests_and_posts_each_label_after_the_delay(prepped, stub):
    result = replay(settings=prepped, dataset="torque_shift", rate=200, limit=60, url=stub, feedback_delay=0.2, progress=False)
    assert (result.predicted, result.feedback_sent, result.predict_errors, result.feedback_errors) == (60, 60, 0, 0)
    predicts = [(t, b) for t, p, b in Recorder.calls if p == "/predict"]
    feedback = [(t, b) for t, p, b in Recorder.calls if p == "/feedback"]
    assert predicts[-1][0] - predicts[0][0] >= 59 / 200 * 0.95  # no faster than the rate
    sent_at = {f"r{n}": t for n, (t, path, _) in enumerate(Recorder.calls) if path == "/predict"}  # the stub's ids
    _, df = load_dataset(Paths.from_settings(prepped), "torque_shift", limit=60)
    truth = dict(zip(sent_at, df["machine_failure"]))
    for t, body in feedback:
        assert t - sent_at[body["request_id"]] >= 0.2 * 0.95  # ground truth arrives late
        assert body["label"] == truth[body["request_id"]]
    assert set(predicts[0][1]) == {"type", "air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min"}
    assert predicts[0][1]["torque_nm"] == pytest.approx(float(df["torque_nm"].iloc[0]))


def test_refused_requests_are_counted_and_the_replay_goes_on(prepped, stub):
    Recorder.fail_every = 5
    result = replay(settings=prepped, dataset="natural", rate=1000, limit=20, url=stub, feedback_delay=0, progress=False)
    assert result.predicted == 16 and result.predict_errors == 4 and result.feedback_sent == 16
    assert result.errors_by_kind == {"predict:http_422": 4}


def test_an_unreachable_service_stops_the_replay_with_a_clear_error(prepped):
    with pytest.raises(ReplayError, match="does not answer"):
        replay(settings=prepped, dataset="natural", rate=10_000, limit=100, url=f"http://127.0.0.1:{free_port()}",
               feedback_delay=0, progress=False)


def test_unknown_data_sets_and_unmanaged_files_are_refused(prepped, tmp_path):
    with pytest.raises(ReplayError, match="torque_shift"):
        replay(settings=prepped, dataset="no_such_recipe", progress=False)
    stray = tmp_path / "stray.csv"
    stray.write_text("type\nL\n")
    with pytest.raises(NotFoundError, match="no manifest entry"):
        replay(settings=prepped, dataset=str(stray), progress=False)


def test_replay_cli(prepped, stub):
    from services.monitor.__main__ import main

    args = ["replay", "--config", str(prepped.config_path), "--dataset", "natural", "--limit", "5", "--rate", "500",
            "--url", stub, "--feedback-delay", "0", "--no-progress"]
    assert main(args) == 0
    assert sum(1 for c in Recorder.calls if c[1] == "/feedback") == 5
