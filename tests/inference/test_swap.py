"""Hot swap: under steady load over real HTTP, with corrupt versions, with bad config edits."""
from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from shared import deploylog, pin
from tests.conftest import wait_for
from tests.inference.test_api import SNAKE


class Load:
    """Client threads sending /predict (and /predict/batch) in a loop over keep-alive connections."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[list[tuple[int, str | None]]] = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, i: int) -> None:
        out = self.results[i]
        with httpx.Client(base_url=self.url, timeout=10) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    if i == 0 and n % 5 == 0:
                        r = c.post("/predict/batch", json={"readings": [SNAKE] * 3})
                        body = r.json()
                        versions = {body.get("model_version")}
                        assert len(body.get("predictions", [])) == 3
                    else:
                        r = c.post("/predict", json=SNAKE)
                        versions = {r.json().get("model_version")}
                    out.append((r.status_code, versions.pop()))
                except Exception as e:  # noqa: BLE001 - a failed request is what the test counts
                    out.append((-1, repr(e)))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    @property
    def all(self) -> list[tuple[int, str | None]]:
        return [x for r in self.results for x in r]


def test_swap_under_load_fails_no_request(live, served, paths):
    with Load(live.url) as load:
        wait_for(lambda: len(load.all) > 50)
        assert pin.set_pin(served.config_path, "v2", paths=paths) == "v1"
        wait_for(lambda: all(r and r[-1][1] == "v2" for r in load.results))
        n_at_swap = len(load.all)
        wait_for(lambda: len(load.all) > n_at_swap + 50)
    results = load.all
    assert len(results) > 100
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    assert {v for _, v in results} == {"v1", "v2"}
    for per_client in load.results:  # one reference, swapped once: no client sees v1 after v2
        versions = [v for _, v in per_client]
        first_v2 = versions.index("v2")
        assert set(versions[first_v2:]) == {"v2"} and set(versions[:first_v2]) == {"v1"}
    rows = deploylog.read_rows(paths)
    swaps = [r for r in rows if r["event"] == "swap" and r["instance_id"] == "live-1"]
    assert [(r["version"], r["previous_version"]) for r in swaps] == [("v2", "v1")]
    assert swaps[0]["onnx_sha256"] == json.loads(paths.metadata_file("v2").read_text())["onnx_sha256"]
    assert [r["event"] for r in rows if r["instance_id"] == "live-1"] == ["start", "swap"]
    assert httpx.get(f"{live.url}/model").json()["model_version"] == "v2"
    assert deploylog.serving_at(paths, swaps[0]["time"], instance_id="live-1")["version"] == "v2"


def make_corrupt_version(paths, source: str, target: str) -> bytes:
    """A complete-looking version whose model.onnx does not match its metadata's sha256; returns the good bytes."""
    shutil.copytree(paths.model_dir(source), paths.model_dir(target))
    md = json.loads(paths.metadata_file(target).read_text())
    md["version"] = target
    paths.metadata_file(target).write_text(json.dumps(md))
    good = paths.model_file(target).read_bytes()
    paths.model_file(target).write_bytes(good[:100] + bytes(b ^ 0xFF for b in good[100:110]) + good[110:])
    return good


def test_corrupt_version_leaves_the_old_one_serving(live, served, paths):
    good = make_corrupt_version(paths, "v2", "v3")
    cfg = served.config_path
    with Load(live.url, threads=2) as load:
        wait_for(lambda: len(load.all) > 30)
        cfg.write_text(cfg.read_text().replace("  model_version: v1\n", "  model_version: v3\n"))  # a hand edit
        ready = wait_for(lambda: (r := httpx.get(f"{live.url}/ready").json())["last_swap_failure"] and r)
        n = len(load.all)
        wait_for(lambda: len(load.all) > n + 30)
    assert all(status == 200 and v == "v1" for status, v in load.all)
    assert ready["ready"] is True and ready["model_version"] == "v1" and ready["pinned_version"] == "v3"
    assert ready["last_swap_failure"]["version"] == "v3" and "sha256" in ready["last_swap_failure"]["error"]
    assert "pinned v3 failed to load" in ready["detail"]
    failed = [r for r in deploylog.read_rows(paths) if r["event"] == "swap_failed"]
    assert len(failed) == 1
    assert (failed[0]["version"], failed[0]["previous_version"]) == ("v3", "v1") and "sha256" in failed[0]["detail"]
    assert "clockwork_inference_swap_failures_total 1.0" in httpx.get(f"{live.url}/metrics").text
    # Nothing changed: no retry, no second row.
    time.sleep(0.5)
    assert len([r for r in deploylog.read_rows(paths) if r["event"] == "swap_failed"]) == 1
    # The files are repaired: the pinned version is loaded without touching config.yaml.
    paths.model_file("v3").write_bytes(good)
    wait_for(lambda: httpx.get(f"{live.url}/model").json()["model_version"] == "v3")
    assert httpx.get(f"{live.url}/ready").json()["detail"] == "serving v3"


@pytest.mark.parametrize("garbage", ["deployment: [unclosed\n", "volume_root: volumes\n"])
def test_invalid_config_edit_keeps_serving(client, served, paths, garbage):
    cfg = served.config_path
    original = cfg.read_text()
    cfg.write_text(garbage)
    ready = wait_for(lambda: (r := client.get("/ready").json())["config_error"] and r)
    assert ready["ready"] is True and ready["model_version"] == "v1"
    assert str(cfg) in ready["config_error"]
    assert client.post("/predict", json=SNAKE).json()["model_version"] == "v1"
    assert "clockwork_inference_config_errors_total 1.0" in client.get("/metrics").text
    cfg.write_text(original.replace("  model_version: v1\n", "  model_version: v2\n"))
    wait_for(lambda: client.post("/predict", json=SNAKE).json()["model_version"] == "v2")
    assert client.get("/ready").json()["config_error"] is None


def test_a_missing_pinned_version_is_loaded_once_it_appears(client, served, paths):
    """Pinned before the trainer finished: swap_failed, then the swap when the version's files land."""
    cfg = served.config_path
    shutil.move(paths.model_dir("v2"), paths.models_dir / ".held-v2")
    cfg.write_text(cfg.read_text().replace("  model_version: v1\n", "  model_version: v2\n"))
    wait_for(lambda: client.get("/ready").json()["last_swap_failure"])
    assert client.post("/predict", json=SNAKE).json()["model_version"] == "v1"
    shutil.move(paths.models_dir / ".held-v2", paths.model_dir("v2"))
    wait_for(lambda: client.post("/predict", json=SNAKE).json()["model_version"] == "v2")
    events = [(r["event"], r["version"]) for r in deploylog.read_rows(paths)]
    assert events == [("start", "v1"), ("swap_failed", "v2"), ("swap", "v2")]


def test_same_instance_id_twice_is_refused(served):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app
    from shared.errors import ClockworkError

    with TestClient(create_app(served, instance_id="dup")):
        with pytest.raises(ClockworkError, match="another running instance"):
            with TestClient(create_app(served, instance_id="dup")):
                pass


def test_a_torn_last_line_is_closed_before_new_records(served, paths):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    log = paths.prediction_log_dir / "torn.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('{"time": "2026-01-01T00:00:00Z", "request_id": "x"')  # a process died mid-line
    with TestClient(create_app(served, instance_id="torn")) as c:
        rid = c.post("/predict", json=SNAKE).json()["request_id"]
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["request_id"] == rid
