"""/docs renders its operations in a real headless Chromium with every host but the service's unreachable."""
from __future__ import annotations

import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_docs_render_their_operations_with_the_outside_cut_off(live, tmp_path):
    # Every host name resolves to nothing except the service's loopback address: a page that needed a CDN
    # would render empty.
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000", "--dump-dom",
         f"{live.url}/docs"],
        capture_output=True, text=True, timeout=120,
    )
    dom = proc.stdout
    assert "swagger-ui" in dom, proc.stderr[-2000:]
    for path in ("/predict", "/predict/batch", "/feedback", "/lineage/{request_id}"):
        assert f'data-path="{path}"' in dom, f"{path} not rendered"
    assert "cdn.jsdelivr.net" not in dom and "/docs-assets/swagger-ui-bundle.js" in dom


def test_docs_pages_load_only_local_assets(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html, html
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/redoc.standalone.js").status_code == 200
