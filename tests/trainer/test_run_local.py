"""Local mode's supervision: a service that exits is started again and the others keep running."""

from __future__ import annotations

import sys
import time

from scripts import run_local
from tests.conftest import wait_for


def test_an_exited_service_is_restarted_and_the_others_keep_running(tmp_path, monkeypatch):
    monkeypatch.setattr(run_local, "RESTART_DELAYS_S", (0.2, 0.4))
    local = run_local.Local(config=tmp_path / "config.yaml", redis_port=1, data_dir=tmp_path)
    local.commands = {
        "trainer": [sys.executable, "-c", "import sys; sys.exit(3)"],
        "inference": [sys.executable, "-c", "import time; time.sleep(60)"],
    }
    for label in local.commands:
        local.spawn(label)
    inference = local.services["inference"]
    first_trainer = local.services["trainer"]
    try:
        first_trainer.wait(10)
        deadline = time.time() + 10
        while local.services["trainer"] is first_trainer and time.time() < deadline:
            local.check()
            time.sleep(0.05)
        assert local.services["trainer"] is not first_trainer  # started again
        assert local.services["inference"] is inference and inference.poll() is None  # untouched
        # Exiting again in a row: the next delay is longer, and inference still runs.
        wait_for(lambda: local.services["trainer"].poll() is not None, 10, what="second exit")
        local.check()
        assert local.exits_in_a_row["trainer"] == 2 and inference.poll() is None
    finally:
        local.stop()
    assert local.stopping and inference.poll() is not None
