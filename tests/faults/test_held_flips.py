"""Fault scenario 4: the pin flips v1 -> v2 -> v1 ... while clients post /predict to a real inference process.

Zero failed requests, answered = logged, every logged record names the version that answered it, one `swap`
row per flip (and one `promote` row per flip from the command that set the pin), and no client ever sees the
old version again after the new one answered it.
"""

from __future__ import annotations

import itertools

import pytest

from shared import deploylog, pin
from shared.paths import Paths
from tests.conftest import wait_for
from tests.faults.helpers import Inference, Ledger, Load, logged_predictions, service_env

pytestmark = pytest.mark.slow


def test_pin_flips_under_load_fail_nothing_and_every_record_names_its_version(served, tmp_path):
    paths = Paths.from_settings(served)
    service = Inference(served, "flip-1", log=tmp_path / "inference.log", env=service_env())
    flips = ["v2", "v1", "v2", "v1", "v2", "v1"]
    try:
        service.ready()
        with Load(service.url, threads=3) as load:
            load.wait_more(50)
            for target in flips:
                pin.set_pin(served.config_path, target, paths=paths, actor="flip-test")
                # Every client has been answered by the new version: the swap is complete.
                _wait_all_clients_on(load, target)
                load.wait_more(40)
    finally:
        service.kill()
    answers = load.all
    logged = {r["request_id"]: r for r in logged_predictions(paths, "flip-1")}
    rows = deploylog.read_rows(paths)
    swaps = [r for r in rows if r["event"] == "swap" and r["instance_id"] == "flip-1"]
    mismatched = [a for a in load.answered if logged.get(a.request_id, {}).get("model_version") != a.version]
    changes_per_client = [sum(x.version != y.version for x, y in itertools.pairwise(r)) for r in load.results]
    ledger = Ledger(
        "pin flips",
        counts={
            "flips": len(flips),
            "sent": len(answers),
            "answered": len(load.answered),
            "failed": len(load.failed),
            "logged": len(logged),
            "answered_not_logged_as_answered": len(mismatched),
            "swap_rows": len(swaps),
            "promote_rows": sum(r["event"] == "promote" for r in rows),
            "most_version_changes_seen_by_one_client": max(changes_per_client),
        },
    )
    ledger.zero("failed", "answered_not_logged_as_answered")
    ledger.balance("sent", "answered")
    ledger.balance("answered", "logged")
    ledger.balance("flips", "swap_rows")
    ledger.balance("flips", "promote_rows")
    # A client never sees the old version after the new one: at most one change per flip.
    ledger.balance("flips", "most_version_changes_seen_by_one_client")
    expected = list(zip(flips, ["v1", *flips[:-1]], strict=True))
    assert [(r["version"], r["previous_version"]) for r in swaps] == expected, swaps
    assert {a.version for a in load.answered} == {"v1", "v2"}


def _wait_all_clients_on(load: Load, version: str) -> None:
    def on():
        return all(r and r[-1].version == version for r in load.results)

    wait_for(on, 15.0, what=f"every client answered by {version}")
