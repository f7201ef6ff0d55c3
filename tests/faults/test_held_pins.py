"""Fault scenario 3: bad pins, on a real `python -m services.inference` under load.

A pin to a version that must not be served (one case per kind, all on one running service): it keeps serving
the old model with zero failed requests and answered = logged. A well-formed pin to an unservable version is
refused by the swap: a `swap_failed` row naming the cause, /ready `last_swap_failure`, the swap-failure
counter. A pin that is no version name makes config.yaml invalid and is refused with it: /ready
`config_error`, the config-error counter, and (so far) no deployment row: the strict xfail below.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from shared import deploylog
from shared.atomic import atomic_write_bytes, sha256_bytes
from shared.config import load_settings
from shared.paths import Paths
from shared.registry import metadata_json
from tests.conftest import wait_for
from tests.faults.helpers import Inference, Ledger, Load, logged_predictions
from tests.trainer.helpers import with_config

pytestmark = pytest.mark.slow

SWAP_FAILURES = "clockwork_inference_swap_failures_total"
CONFIG_ERRORS = "clockwork_inference_config_errors_total"
SWAPS = "clockwork_inference_swaps_total"


# --- the bad versions: each builder plants one on the volume and returns the pin text --------------------
def _copy_of(paths: Paths, target: str, source: str = "v2") -> Path:
    """A complete, valid copy of `source` registered under `target`."""
    folder = paths.model_dir(target)
    shutil.copytree(paths.model_dir(source), folder)
    md = json.loads(paths.metadata_file(target).read_text())
    paths.metadata_file(target).write_bytes(metadata_json(dict(md, version=target)))
    return folder


def _replace_model(paths: Paths, version: str, model: onnx.ModelProto, extra: Callable[[Path], None] = None) -> None:
    """Put `model` in the version's folder with a metadata sha256 that matches it (only the content is bad)."""
    data = model.SerializeToString()
    paths.model_file(version).write_bytes(data)
    md = json.loads(paths.metadata_file(version).read_text())
    paths.metadata_file(version).write_bytes(metadata_json(dict(md, onnx_sha256=sha256_bytes(data))))
    if extra:
        extra(paths.model_dir(version))


def _matmul_model(width: int, *, external: bool) -> onnx.ModelProto:
    """readings [N, width] -> probability [N, 1]; with `external`, its weight lives in weights.bin beside it."""
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, [width, 1], np.ones(width, dtype=np.float32).tobytes(), raw=True
    )
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["readings", "w"], ["probability"])],
            "g",
            [helper.make_tensor_value_info("readings", TensorProto.FLOAT, ["N", width])],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
            initializer=[weight],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,  # one the installed onnxruntime reads: only the signature is wrong
    )
    if external:
        onnx.external_data_helper.convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    return model


def missing_version(paths: Paths) -> str:
    return "v9"


def dotdot_name(paths: Paths) -> str:
    return "../v1"


def hex_name(paths: Paths) -> str:
    return "v0x"


def no_model_file(paths: Paths) -> str:
    _copy_of(paths, "v3")
    paths.model_file("v3").unlink()
    return "v3"


def corrupt_model(paths: Paths) -> str:
    _copy_of(paths, "v4")
    good = paths.model_file("v4").read_bytes()
    paths.model_file("v4").write_bytes(good[:100] + bytes(b ^ 0xFF for b in good[100:110]) + good[110:])
    return "v4"


def metadata_missing(paths: Paths) -> str:
    _copy_of(paths, "v5")
    paths.metadata_file("v5").unlink()
    return "v5"


def metadata_malformed(paths: Paths) -> str:
    _copy_of(paths, "v6")
    paths.metadata_file("v6").write_text('{"version": "v6", "onnx_sha256": ')
    return "v6"


def external_data(paths: Paths) -> str:
    _copy_of(paths, "v7")
    model = _matmul_model(6, external=True)

    def weights(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(np.ones(6, dtype=np.float32).tobytes())

    _replace_model(paths, "v7", model, weights)
    return "v7"


def wrong_signature(paths: Paths) -> str:
    _copy_of(paths, "v8")
    _replace_model(paths, "v8", _matmul_model(5, external=False))
    return "v8"


def temp_folder(paths: Paths) -> str:
    """What a trainer killed mid-register leaves: a hidden temp folder holding only model.onnx."""
    folder = paths.models_dir / ".tmp-3f9c2a"
    folder.mkdir()
    shutil.copyfile(paths.model_file("v2"), folder / "model.onnx")
    return ".tmp-3f9c2a"


# A pin whose name is not a version name never reaches the registry: config.yaml no longer validates, so the
# edit is refused as a whole (/ready config_error, clockwork_inference_config_errors_total).
INVALID_NAMES = {
    "dotdot_name": (dotdot_name, "../v1"),
    "hex_name": (hex_name, "v0x"),
    "temp_folder_name": (temp_folder, ".tmp-3f9c2a"),
}
# A well-formed pin to a version that cannot be served: the swap is refused (a swap_failed row, /ready
# last_swap_failure, clockwork_inference_swap_failures_total). (builder, what the row must say)
UNSERVABLE = {
    "missing_version": (missing_version, r"No such model version: v9"),
    "no_model_file": (no_model_file, r"model file missing: .*v3/model\.onnx"),
    "corrupt_model": (corrupt_model, r"v4/model\.onnx: sha256 \w+ does not match metadata onnx_sha256"),
    "metadata_missing": (metadata_missing, r"No such model version: v5"),
    "metadata_malformed": (metadata_malformed, r"v6/metadata\.json: malformed metadata"),
    "external_data": (external_data, r"v7/model\.onnx.*references external data"),
    "wrong_signature": (wrong_signature, r"input 'readings' must be float32 \[N, 6\]"),
}


def set_pin_text(config: Path, version: str) -> None:
    """A hand edit of config.yaml (what an operator does without the promote command's checks)."""
    text = config.read_text()
    new = re.sub(r"(?m)^(\s+model_version:).*$", lambda m: f"{m.group(1)} {json.dumps(version)}", text, count=1)
    atomic_write_bytes(config, new.encode())  # as editors and the promote command do: no torn reads


@pytest.fixture(scope="module")
def pin_service(faults_served_template, tmp_path_factory):
    """One inference process for all the bad pins (each case plants its own version name)."""
    dest = tmp_path_factory.mktemp("bad-pins") / "project"
    shutil.copytree(faults_served_template, dest)
    settings = with_config(load_settings(dest / "config.yaml", env={}), **{"deployment.reload_interval_s": 0.1})
    service = Inference(settings, "pins-1", log=dest / "inference.log")
    try:
        service.ready()
        yield settings, Paths.from_settings(settings), service
    finally:
        service.kill()


@dataclass
class Refusal:
    """What one bad pin under load left behind."""

    version: str
    ready: dict
    rows: list[dict]
    ledger: Ledger


def pin_under_load(settings, paths: Paths, service: Inference, kind: str, build: Callable[[Paths], str]) -> Refusal:
    """Plant the bad version, pin it by hand while clients post /predict, wait until it is refused, pin v1 back."""
    rows_before = len(deploylog.read_rows(paths))
    logged_before = len(logged_predictions(paths, service.instance_id))
    metrics_before = {m: service.metric(m) for m in (SWAP_FAILURES, CONFIG_ERRORS, SWAPS)}
    version = build(paths)
    with Load(service.url) as load:
        load.wait_more(30)
        set_pin_text(settings.config_path, version)
        ready = _wait_refused(service, version)
        load.wait_more(30)
    metrics = {m: int(service.metric(m) - metrics_before[m]) for m in metrics_before}
    rows = deploylog.read_rows(paths)[rows_before:]
    logged = logged_predictions(paths, service.instance_id)[logged_before:]
    set_pin_text(settings.config_path, "v1")
    wait_for(
        lambda: (r := service.get("/ready").json())["pinned_version"] == "v1" and not r["config_error"],
        10.0,
        what="the pin back on v1",
    )
    ledger = Ledger(
        f"bad pin {kind} ({version!r})",
        counts={
            "sent": load.count(),
            "answered": len(load.answered),
            "failed": len(load.failed),
            "logged": len(logged),
            "answered_not_by_v1": sum(a.version != "v1" for a in load.answered),
            "logged_not_by_v1": sum(r["model_version"] != "v1" for r in logged),
            "swap_failed_rows": sum(r["event"] == "swap_failed" for r in rows),
            "config_rejected_rows": sum(r["event"] == "config_rejected" for r in rows),
            "other_rows": sum(r["event"] not in ("swap_failed", "config_rejected") for r in rows),
            "swap_failures_metric": metrics[SWAP_FAILURES],
            "config_errors_metric": metrics[CONFIG_ERRORS],
            "swaps_metric": metrics[SWAPS],
        },
    )
    ledger.zero("failed", "answered_not_by_v1", "logged_not_by_v1", "other_rows", "swaps_metric")
    ledger.balance("sent", "answered")
    ledger.balance("answered", "logged")
    assert ready["ready"] is True and ready["model_version"] == "v1", ready
    return Refusal(version, ready, rows, ledger)


@pytest.mark.parametrize("kind", list(UNSERVABLE))
def test_an_unservable_pin_keeps_the_old_model_serving_and_logs_why(pin_service, kind):
    build, cause = UNSERVABLE[kind]
    got = pin_under_load(*pin_service, kind, build)
    got.ledger.zero("config_errors_metric")
    assert got.ledger.counts["swap_failed_rows"] == 1 and got.ledger.counts["swap_failures_metric"] == 1, str(
        got.ledger
    )
    row = got.rows[0]
    assert (row["version"], row["previous_version"], row["instance_id"]) == (got.version, "v1", "pins-1"), row
    assert re.search(cause, row["detail"]), row["detail"]
    assert got.ready["last_swap_failure"]["version"] == got.version, got.ready
    assert re.search(cause, got.ready["last_swap_failure"]["error"]), got.ready
    assert f"pinned {got.version} failed to load" in got.ready["detail"], got.ready


@pytest.mark.parametrize("kind", list(INVALID_NAMES))
def test_a_pin_that_is_no_version_name_is_refused_with_the_config_and_the_old_model_serves(pin_service, kind):
    settings, _, _ = pin_service
    build, name = INVALID_NAMES[kind]
    got = pin_under_load(*pin_service, kind, build)
    got.ledger.zero("swap_failures_metric")
    got.ledger.exactly(config_errors_metric=1)
    error = got.ready["config_error"]
    assert error and str(settings.config_path) in error and "deployment.model_version" in error, got.ready
    assert f"(got {name!r})" in error and (got.ready["last_swap_failure"] or {}).get("version") != name, got.ready
    assert "config.yaml not applied" in got.ready["detail"], got.ready


def test_a_pin_that_is_no_version_name_is_written_in_the_deployment_log(pin_service):
    """Refused as an invalid config.yaml, and recorded: a config_rejected row naming the pin, v1 still served."""
    got = pin_under_load(*pin_service, "dotdot_name", dotdot_name)
    got.ledger.exactly(config_rejected_rows=1)
    got.ledger.zero("swap_failed_rows")
    row = got.rows[0]
    assert row["event"] == "config_rejected" and row["version"] == "v1" and "../v1" in row["detail"], row


def _wait_refused(service: Inference, version: str) -> dict:
    def refused():
        r = service.get("/ready").json()
        failure = r.get("last_swap_failure") or {}
        return r if failure.get("version") == version or r.get("config_error") else None

    return wait_for(refused, 15.0, what=f"the pin {version!r} to be refused")
