"""The HTML report after a drift -> retrain -> gate -> pin -> swap cycle, in a real browser at 1280 px.

Real parts: a trained project, Redis, inference over HTTP, replayed drifted traffic, the monitor, the retrain
worker. Needs Debian's chromium and chromium-driver (skipped with the reason otherwise). Screenshots of the page
go to the test's tmp dir and to /tmp/report-shots/ for review.
"""
from __future__ import annotations

import shutil

import pytest
import requests
import yaml

from shared.config import load_settings
from shared.paths import Paths
from shared.pin import read_pin, set_pin
from tests.conftest import LiveServer, wait_for
from tests.console.test_browser import _browser

pytestmark = pytest.mark.slow

SHOTS = "/tmp/report-shots"
WIDTH = 1280


@pytest.fixture
def cycle_project(tmp_path, trained_template, redis_server):
    dest = tmp_path / "project"
    shutil.copytree(trained_template, dest)
    cfg_path = dest / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["redis"]["url"] = redis_server.url
    cfg["deployment"]["reload_interval_s"] = 0.2
    cfg["monitoring"]["gate"]["window_size"] = 300
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_settings(cfg_path, env={})


def test_the_report_after_a_retrain_cycle_shows_each_step_with_its_ids_at_1280_px(cycle_project, redis_client,
                                                                                 tmp_path):
    from selenium.webdriver.common.by import By

    from services.inference.app import create_app
    from services.monitor.monitor import Monitor
    from services.monitor.replay import replay
    from services.trainer.worker import Worker

    settings = cycle_project
    paths = Paths.from_settings(settings)
    browser = _browser(tmp_path)  # skips before the slow part when there is no browser
    try:
        with LiveServer(create_app(settings, instance_id="inference-1")) as api:
            replay(settings=settings, dataset="accelerated_tool_wear", rate=5000, limit=1000, url=api.url,
                   feedback_delay=0.05, progress=False)
            monitor = Monitor(settings=settings, redis_client=redis_client)
            first = monitor.cycle()
            assert first.trigger.status == "sent"
            message_id = first.trigger.message_id
            assert Worker(settings=settings, redis=redis_client, max_jobs=1, poll_s=0.2).run() == 1
            by_hand = read_pin(settings.config_path) != "v2"
            if by_hand:  # the gate kept v1: a person promotes it
                set_pin(settings.config_path, "v2", paths=paths, actor="operator", detail="promoted by hand")
            wait_for(lambda: requests.get(f"{api.url}/model", timeout=5).json().get("model_version") == "v2",
                     what="inference to serve v2")
            replay(settings=settings, dataset="natural", rate=5000, limit=300, url=api.url, feedback_delay=0.05,
                   progress=False)
            report = monitor.cycle()

        (chain,) = [c for c in report.actions.chains if c.message_id == message_id]
        assert chain.candidate.version == "v2" and chain.gate is not None and chain.job.status == "done"
        assert [p.version for p in chain.pin] == ["v2"] and chain.swaps[0].instance_id == "inference-1"
        assert (chain.pin[0].instance_id == "operator") == by_hand
        assert chain.outcome == "serving"

        shots = tmp_path / "shots"
        shots.mkdir()
        browser.set_window_size(WIDTH, 1000)
        browser.get((paths.reports_dir / "latest.html").as_uri())
        assert browser.execute_script("return window.innerWidth") <= WIDTH
        assert browser.execute_script("return document.documentElement.scrollWidth") <= WIDTH
        text = browser.find_element(By.TAG_NAME, "body").text
        for ident in (message_id, report.trigger.message_id, "v2", "inference-1", chain.gate.decision,
                      chain.candidate.data_version, chain.pin[0].instance_id):
            assert ident in text, ident
        assert first.created_at not in text  # times read as times
        height = browser.execute_script("return document.documentElement.scrollHeight")
        for i, top in enumerate(range(0, height, 900)):
            browser.execute_script(f"window.scrollTo(0, {top})")
            browser.save_screenshot(str(shots / f"report-{i}.png"))
        for img in browser.find_elements(By.TAG_NAME, "img"):  # plots scale to the page, never clipped by it
            assert img.size["width"] <= WIDTH - 32, img.get_attribute("alt")
    finally:
        browser.quit()
    shutil.rmtree(SHOTS, ignore_errors=True)
    shutil.copytree(tmp_path / "shots", SHOTS)
