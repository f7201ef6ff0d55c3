"""The console in a real browser (headless Chromium through selenium) over a running system: a prepped and
trained project with v1 and v2, a live inference service, a real Redis, one monitoring cycle.

Needs Debian's chromium and chromium-driver (.ci/run installs them where it can); skipped with the reason otherwise.
Screenshots of every page go to the test's tmp dir (and to /tmp/console-shots/ for review).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from shared import deploylog
from shared.paths import Paths
from tests.conftest import LiveServer, wait_for
from tests.inference.test_api import FAILING, SNAKE

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KEY = "console-browser-key"
SHOTS = Path("/tmp/console-shots")
PAGES = {
    "overview": "/",
    "registry": "/registry",
    "diff": "/registry/diff?a=v1&b=v2",
    "deployments": "/deployments",
    "data": "/data",
    "monitoring": "/monitoring",
    "jobs": "/jobs",
}


def _browser(tmp_path: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (requirements-dev.txt)")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"no browser: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)


@pytest.fixture
def system(served, redis_client, tmp_path):
    """Inference live on v1 with some traffic and labels, one monitoring cycle done, the console live."""
    from services.console.app import create_app
    from services.inference.app import create_app as inference_app
    from services.monitor.monitor import Monitor

    settings = served.model_copy(update={"redis": served.redis.model_copy(update={"url": _url(redis_client)})})
    with LiveServer(inference_app(settings, instance_id="browser-test", api_key=None)) as inf:
        ids = []
        with httpx.Client(base_url=inf.url, timeout=10) as c:
            for i in range(30):
                reading = FAILING if i % 10 == 0 else SNAKE
                r = c.post("/predict", json=reading)
                assert r.status_code == 200, r.text
                ids.append(r.json()["request_id"])
                c.post("/feedback", json={"request_id": ids[-1], "label": 1 if i % 10 == 0 else 0})
        Monitor(settings=settings, redis_client=redis_client).cycle()
        console = create_app(settings, redis=redis_client, api_key=KEY, inference_url=inf.url)
        with LiveServer(console) as con:
            yield {"settings": settings, "inference": inf.url, "console": con.url, "request_id": ids[0]}


def _url(client) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def test_every_page_renders_in_a_browser_and_promote_swaps_the_service(system, tmp_path):
    from selenium.webdriver.common.by import By

    base = system["console"]
    browser = _browser(tmp_path)
    shots = Path(os.environ.get("CLOCKWORK_SCREENSHOTS") or tmp_path / "shots")  # kept where asked, to look at
    shots.mkdir(parents=True, exist_ok=True)
    try:
        browser.set_page_load_timeout(20)
        for name, url in {**PAGES, "lineage": f"/lineage?request_id={system['request_id']}"}.items():
            browser.get(base + url)
            assert browser.find_element(By.TAG_NAME, "h1").text, name
            assert "Internal Server Error" not in browser.page_source, name
            browser.save_screenshot(str(shots / f"{name}.png"))
        browser.get(base + "/")
        assert "ready (200)" in browser.find_element(By.ID, "ready").text
        assert "browser-test" in browser.page_source and "v1" in browser.find_element(By.ID, "pin").text
        browser.get(base + f"/lineage?request_id={system['request_id']}")
        assert "ai4i2020.csv" in browser.page_source

        # Without the key: refused, nothing changes.
        paths = Paths.from_settings(system["settings"])
        before = len(deploylog.read_rows(paths))
        r = httpx.post(base + "/actions/promote", data={"version": "v2"})
        assert r.status_code == 401 and len(deploylog.read_rows(paths)) == before

        # With the key, through the registry page's form: the pin moves, inference swaps, a promote row is logged.
        browser.get(base + "/registry")
        form = browser.find_element(By.CSS_SELECTOR, "form[action='/actions/promote']")
        assert form.find_element(By.NAME, "version").get_attribute("value") == "v2"
        form.find_element(By.NAME, "api_key").send_keys(KEY)
        form.find_element(By.CSS_SELECTOR, "button").click()
        assert "pinned v2 (was v1)" in browser.find_element(By.ID, "message").text
        browser.save_screenshot(str(shots / "promoted.png"))
        wait_for(
            lambda: httpx.get(system["inference"] + "/model").json().get("model_version") == "v2",
            what="inference to serve v2",
        )
        rows = deploylog.read_rows(paths)
        assert any(r["event"] == "promote" and r["version"] == "v2" for r in rows[before:])
        browser.get(base + "/")
        browser.save_screenshot(str(shots / "overview-after.png"))
    finally:
        browser.quit()
        if not SHOTS.exists():
            shutil.copytree(shots, SHOTS)
