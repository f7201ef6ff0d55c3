"""The OpenAPI document is the contract: schemathesis (the CLI, every check, every operation, a fixed seed)
against the real service over HTTP finds no failure: no 5xx, no schema-valid request refused, no refusal or
answer outside the declared responses, a 405 with `Allow` for undeclared methods, keyed routes refusing
requests without the key. Run on a service without a key, and on one with a key (with and without sending it).

Reproduce a failure with the command in the assertion message (the seed makes it the same run).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.inference.app import create_app
from tests.conftest import LiveServer

SEED = 20201
KEY = "fuzz-key-7d4a65"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def schemathesis_run(url: str, cwd: Path, *headers: str) -> str:
    cmd = [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all", "--seed", str(SEED),
           "--max-examples", "30", "--no-color"]
    for header in headers:
        cmd += ["-H", header]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert "Tested: 9" in summary and "Failures" not in summary, summary
    return summary


@pytest.mark.slow
def test_schemathesis_finds_no_failure_with_every_check(live, tmp_path):
    schemathesis_run(live.url, tmp_path)


@pytest.mark.slow
def test_schemathesis_finds_no_failure_on_a_keyed_service_with_and_without_the_key(served, tmp_path):
    with LiveServer(create_app(served, instance_id="keyed-1", api_key=KEY)) as server:
        schemathesis_run(server.url, tmp_path, f"X-API-Key: {KEY}")  # also checks the key is enforced
        summary = schemathesis_run(server.url, tmp_path)  # every keyed operation answers 401, as declared
    assert "3 operations returned only 401/403" in summary, summary
