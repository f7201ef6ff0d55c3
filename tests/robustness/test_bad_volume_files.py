"""Bad files on the volume: each corrupted as an operator or a crash might, then read by its real consumer.

The standard: a clear error naming the file, the place (line or key) and the reason, in one line; never a
traceback, never a silent drop. A command exits non-zero; a service (inference, the monitor) keeps running
and reports the problem where an operator looks (/ready, the deployment log, the cycle's report).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared import deploylog
from shared.atomic import sha256_file
from shared.config import load_settings
from shared.errors import DataValidationError, ModelLoadError
from shared.labelled import labelled_file, load_labelled
from shared.paths import Paths
from shared.registry import Registry
from tests.ai4i import LABEL, RAW_COLUMNS
from tests.conftest import ROOT, registered_project
from tests.monitor.helpers import day2, stamp, write_traffic

ROWS = 300  # prediction/label pairs in the template's logs
V2_PARAMS = {"n_estimators": 10, "max_depth": 4}


# --- the project: prep, v1 (pinned) and v2 registered, traffic logged, a deployment history ------------------
@pytest.fixture(scope="module")
def template(prepped_template, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("bad-files") / "project"
    settings = registered_project(prepped_template, dest, second_params=V2_PARAMS)
    paths = Paths.from_settings(settings)
    ids = write_traffic(paths, day2(paths, "natural").iloc[:ROWS])
    (dest / "request_ids.json").write_text(json.dumps(ids))
    md1, md2 = (Registry(paths=paths).metadata(v) for v in ("v1", "v2"))
    deploylog.append_event(paths, event="start", version="v1", metadata=md1, instance_id="i1", time=stamp(-100))
    deploylog.append_event(paths, event="promote", version="v2", previous_version="v1", metadata=md2, instance_id="cli",
                           time=stamp(-60))
    deploylog.append_event(paths, event="swap", version="v2", previous_version="v1", metadata=md2, instance_id="i1",
                           time=stamp(-50))
    return dest


@pytest.fixture
def project(tmp_path, template):
    """(settings, paths) of a private copy of the template, pinned to v1."""
    dest = tmp_path / "project"
    shutil.copytree(template, dest)
    settings = load_settings(dest / "config.yaml", env={})
    return settings, Paths.from_settings(settings)


def request_ids(settings) -> list[str]:
    return json.loads((settings.config_path.parent / "request_ids.json").read_text())


def pin_text(settings, version: str) -> None:
    """Edit the pin in config.yaml by hand, as an operator would."""
    cfg = settings.config_path
    cfg.write_text(re.sub(r"(?m)^(\s+model_version:).*$", rf"\1 {version}", cfg.read_text(), count=1))


# --- running consumers and judging what they say -----------------------------------------------------------
class Run:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr


def cli(service: str, *args: str, settings, redis_url: str = "redis://127.0.0.1:1/0") -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCKWORK_")}
    env["CLOCKWORK_REDIS_URL"] = redis_url
    proc = subprocess.run([sys.executable, "-m", f"services.{service}", *args, "--config", str(settings.config_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return Run(proc)


def clear_line(text: str, path: Path | str, where: str, why: str) -> str:
    """The one line of `text` that names the file, the place and (regex) the reason."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if str(path) in line and where in line]
    assert lines, f"no line names {path} and {where!r}:\n{text}"
    assert any(re.search(why, line) for line in lines), f"no line says why ({why!r}):\n{text}"
    return next(line for line in lines if re.search(why, line))


def failed_clearly(run: Run, path: Path | str, where: str, why: str) -> str:
    assert run.code != 0, f"exit code 0:\n{run.stderr}"
    return clear_line(run.stderr, path, where, why)


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = text.encode() if isinstance(text, str) else text
    path.write_bytes(b"\n".join(lines))


# --- data/manifest.txt ---------------------------------------------------------------------------------------
MANIFEST_DAMAGE = {
    "not JSON": ("{truncated by a crash", r"Invalid JSON"),
    "missing key": (None, r"required key missing: sha256"),
}


@pytest.mark.parametrize("damage", MANIFEST_DAMAGE)
@pytest.mark.parametrize("command", [("prep", "run"), ("trainer", "train"), ("monitor", "lineage", "<id>")])
def test_a_malformed_manifest_line_stops_every_reader_naming_its_line(project, damage, command):
    settings, paths = project
    text, why = MANIFEST_DAMAGE[damage]
    if text is None:
        entry = json.loads(paths.manifest.read_text().splitlines()[2])
        del entry["sha256"]
        text = json.dumps(entry)
    replace_line(paths.manifest, 3, text)
    before = Registry(paths=paths).versions()
    args = [request_ids(settings)[0] if a == "<id>" else a for a in command[1:]]
    line = failed_clearly(cli(command[0], *args, settings=settings), paths.manifest, f"{paths.manifest}:3", why)
    assert "malformed manifest entry" in line
    assert Registry(paths=paths).versions() == before  # nothing was trained on a manifest it could not read


def test_prep_verify_lists_malformed_manifest_lines_and_still_checks_every_other_file(project):
    settings, paths = project
    replace_line(paths.manifest, 2, "garbage")
    entries = [json.loads(line) for line in paths.manifest.read_text().splitlines()[2:] if line.strip()]
    victim = paths.volume / entries[-1]["path"]
    victim.write_bytes(victim.read_bytes() + b"x")
    run = cli("prep", "verify", settings=settings)
    assert run.code == 1, run.stderr  # the problems are verify's answer: on stdout
    clear_line(run.stdout, paths.manifest, f"{paths.manifest}:2", r"malformed manifest entry: Invalid JSON")
    clear_line(run.stdout, entries[-1]["path"], "mismatch", r"expected sha256")
    assert re.search(r"verify: 2 problem\(s\)", run.stderr)


# --- models/vN/metadata.json ---------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def drop_f1(path: Path) -> None:
    edit_json(path, lambda d: d["metrics"].pop("f1"))


METADATA_DAMAGE = {"truncated": (truncate, "malformed metadata", r"Invalid JSON"),
                   "missing key": (drop_f1, "malformed metadata", r"required key missing: metrics\.f1")}


@pytest.mark.parametrize("damage", METADATA_DAMAGE)
def test_bootstrap_check_names_the_pinned_versions_bad_metadata(project, damage):
    settings, paths = project
    corrupt, where, why = METADATA_DAMAGE[damage]
    corrupt(paths.metadata_file("v1"))
    run = cli("trainer", "bootstrap", "--check", settings=settings)
    failed_clearly(run, paths.metadata_file("v1"), where, why)


def test_promote_refuses_a_version_with_bad_metadata_and_leaves_the_pin(project):
    settings, paths = project
    drop_f1(paths.metadata_file("v2"))
    before = settings.config_path.read_text()
    run = cli("inference", "promote", "v2", settings=settings)
    failed_clearly(run, paths.metadata_file("v2"), "metrics.f1", r"required key missing")
    assert settings.config_path.read_text() == before


def test_inference_starts_without_a_model_and_says_why_when_the_pinned_metadata_is_bad(project):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    settings, paths = project
    edit_json(paths.metadata_file("v1"), lambda d: d.pop("onnx_sha256"))
    with TestClient(create_app(settings, instance_id="bad-md")) as client:
        r = client.get("/ready")
        assert r.status_code == 503
        detail = r.json()["detail"]
        assert "\n" not in detail
        clear_line(detail, paths.metadata_file("v1"), "malformed metadata", r"required key missing: onnx_sha256")
        assert client.get("/health").status_code == 200  # the service runs and reports
    row = deploylog.read_rows(paths)[-1]
    assert (row["event"], row["version"], row["instance_id"]) == ("swap_failed", "v1", "bad-md")
    clear_line(row["detail"], paths.metadata_file("v1"), "onnx_sha256", r"required key missing")


def test_a_swap_to_a_version_with_bad_metadata_keeps_the_old_model_and_says_why(project):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    settings, paths = project
    settings = settings.model_copy(update={"deployment": settings.deployment.model_copy(update={"reload_interval_s": 0.05})})
    truncate(paths.metadata_file("v2"))
    with TestClient(create_app(settings, instance_id="swapper")) as client:
        assert client.get("/ready").json()["model_version"] == "v1"
        pin_text(settings, "v2")
        deadline = time.time() + 10
        while "failed to load" not in client.get("/ready").json()["detail"] and time.time() < deadline:
            time.sleep(0.05)
        ready = client.get("/ready").json()
        assert ready["model_version"] == "v1" and ready["ready"]
        clear_line(ready["detail"], paths.metadata_file("v2"), "malformed metadata", r"Invalid JSON")
        assert client.post("/predict", json={"type": "L", "air_temperature_k": 298.9, "process_temperature_k": 309.1,
                                             "rotational_speed_rpm": 2861, "torque_nm": 4.6,
                                             "tool_wear_min": 143}).json()["model_version"] == "v1"
    failed = [r for r in deploylog.read_rows(paths) if r["event"] == "swap_failed"]
    assert len(failed) == 1 and failed[0]["version"] == "v2" and failed[0]["previous_version"] == "v1"


def test_the_gate_refuses_to_judge_against_a_serving_model_with_bad_metadata(project):
    from services.trainer.gate import decide

    settings, paths = project
    window = day2(paths, "torque_shift").iloc[:800][RAW_COLUMNS + [LABEL]]
    candidate, _ = Registry(paths=paths).load_verified("v2")
    drop_f1(paths.metadata_file("v1"))
    with pytest.raises(ModelLoadError) as err:
        decide(settings=settings, paths=paths, candidate_bytes=candidate, window=window)
    clear_line(str(err.value), paths.metadata_file("v1"), "metrics.f1", r"required key missing")
    assert "\n" not in str(err.value)


def test_the_monitor_keeps_running_and_reports_a_serving_versions_bad_metadata(project, redis_server, redis_client):
    settings, paths = project
    truncate(paths.metadata_file("v1"))
    run = cli("monitor", "--once", settings=settings, redis_url=redis_server.url)
    assert run.code == 0, run.stderr
    clear_line(run.stderr, paths.metadata_file("v1"), "no training metrics for v1", r"Invalid JSON")
    report = json.loads((paths.reports_dir / "latest.json").read_text())
    clear_line(report["drift"]["reference"]["error"], paths.metadata_file("v1"), "malformed metadata", r"Invalid JSON")
    assert report["ingest"]["new_predictions"] == ROWS and report["ingest"]["new_labelled"] == ROWS


# --- a data version's train.csv ---------------------------------------------------------------------------------
def rewrite_train(paths: Paths, change, *, update_manifest: bool = True) -> Path:
    """Change train.csv (and, as a careless operator would, its sha256 in the manifest)."""
    path = paths.train_file("v3_split")
    lines = path.read_bytes().split(b"\n")
    change(lines)
    path.write_bytes(b"\n".join(lines))
    if update_manifest:
        rel = path.relative_to(paths.volume).as_posix()
        out = []
        for line in paths.manifest.read_text().splitlines():
            entry = json.loads(line)
            if entry["path"] == rel:
                entry["sha256"] = sha256_file(path)
            out.append(json.dumps(entry))
        paths.manifest.write_text("\n".join(out) + "\n")
    return path


def cell(lines: list[bytes], line_no: int, column: int, value: bytes) -> None:
    cells = lines[line_no - 1].split(b",")
    cells[column] = value
    lines[line_no - 1] = b",".join(cells)


def drop_column(lines: list[bytes], name: bytes = b"torque_nm") -> None:
    i = lines[0].split(b",").index(name)
    for n, line in enumerate(lines):
        if line:
            cells = line.split(b",")
            del cells[i]
            lines[n] = b",".join(cells)


TRAIN_DAMAGE = {
    "changed bytes": (lambda ls: cell(ls, 5, 2, b"H"), False, "train.csv", r"does not match manifest"),
    "missing column": (drop_column, True, "train.csv", r"columns \['torque_nm'\] missing"),
    "non-numeric value": (lambda ls: cell(ls, 101, 6, b"abc"), True, "line 101: column torque_nm", r"'abc' is not a finite number"),
    "extra field": (lambda ls: ls.__setitem__(100, ls[100] + b",9"), True, "line 101", r"not a readable CSV table.*Expected 14 fields"),
}


@pytest.mark.parametrize("damage", TRAIN_DAMAGE)
def test_training_on_a_damaged_train_csv_fails_naming_line_and_column(project, damage):
    settings, paths = project
    change, update_manifest, where, why = TRAIN_DAMAGE[damage]
    path = rewrite_train(paths, change, update_manifest=update_manifest)
    run = cli("trainer", "train", settings=settings)
    failed_clearly(run, path, where, why)
    assert Registry(paths=paths).versions() == ["v1", "v2"]


# --- prediction and feedback logs -------------------------------------------------------------------------------
def test_garbage_lines_in_the_logs_are_counted_reported_and_skipped_and_every_other_record_is_used(project, redis_server, redis_client):
    settings, paths = project
    preds, fbs = paths.prediction_log_dir / "i1.jsonl", paths.feedback_log_dir / "i1.jsonl"
    offset = len(b"".join(line + b"\n" for line in preds.read_bytes().split(b"\n")[:99]))
    replace_line(preds, 100, "\x00\x00 torn by a crash")
    replace_line(fbs, 50, '{"time": 3, "label": 1}')
    run = cli("monitor", "--once", settings=settings, redis_url=redis_server.url)
    assert run.code == 0, run.stderr
    clear_line(run.stderr, f"{preds}:100", f"(byte {offset})", r"malformed prediction record skipped: Invalid JSON")
    clear_line(run.stderr, f"{fbs}:50", "malformed feedback record", r"time: Input should be a valid string.*request_id")
    ingest = json.loads((paths.reports_dir / "latest.json").read_text())["ingest"]
    assert ingest["malformed"] == 2
    assert [(b["file"], b["line"]) for b in ingest["malformed_lines"]] == [("logs/predictions/i1.jsonl", 100),
                                                                          ("logs/feedback/i1.jsonl", 50)]
    assert ingest["malformed_lines"][0]["offset"] == offset
    # Nothing else is lost: the other 299 predictions and labels are read; the two whose partner line is
    # garbage wait (one prediction without its label, one label without its prediction).
    assert (ingest["new_predictions"], ingest["new_feedback"]) == (ROWS - 1, ROWS - 1)
    assert (ingest["new_labelled"], ingest["pending_predictions"], ingest["orphan_labels"]) == (ROWS - 2, 1, 1)
    assert len(load_labelled(paths)) == ROWS - 2
    html = (paths.reports_dir / "latest.html").read_text()
    assert "logs/predictions/i1.jsonl:100" in html and "logs/feedback/i1.jsonl:50" in html


def test_lineage_of_a_request_whose_prediction_line_is_malformed_names_the_line(project):
    settings, paths = project
    rid = request_ids(settings)[9]
    preds = paths.prediction_log_dir / "i1.jsonl"
    line = preds.read_bytes().split(b"\n")[9]
    replace_line(preds, 10, line.replace(b'"probability"', b'"probabilty"'))
    run = cli("monitor", "lineage", rid, settings=settings)
    failed_clearly(run, f"{preds}:10", rid, r"probabilty: unknown key; required key missing: probability")


# --- monitor/state.json ---------------------------------------------------------------------------------------
STATE_DAMAGE = {
    "not JSON": (b'{"format": 1, "offs', r"Unterminated string starting at: line 1 column 15"),
    "offsets not a mapping": (b'{"format": 1, "offsets": [1, 2]}', r"offsets: Input should be a valid dictionary"),
    "labelled without bytes": (b'{"format": 1, "labelled": {"rows": 3}}', r"required key missing: labelled\.bytes"),
    "short pending row": (b'{"format": 1, "pending": {"r1": ["2026-01-01T00:00:00Z", "v1"]}}', r"pending\.r1"),
}


@pytest.mark.parametrize("damage", STATE_DAMAGE)
def test_a_damaged_monitor_state_stops_the_cycle_naming_the_key_and_changes_nothing(project, damage):
    settings, paths = project
    data, why = STATE_DAMAGE[damage]
    paths.monitor_state.parent.mkdir(parents=True, exist_ok=True)
    paths.monitor_state.write_bytes(data)
    run = cli("monitor", "--once", settings=settings)
    failed_clearly(run, paths.monitor_state, "is unreadable", why)
    assert paths.monitor_state.read_bytes() == data  # not overwritten: counting from scratch is the operator's call
    assert not labelled_file(paths).exists() and not (paths.reports_dir / "latest.json").exists()


# --- monitor/store.sqlite ---------------------------------------------------------------------------------------
def _sqlite(path: Path, *statements: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


STORE_DAMAGE = {
    "not SQLite": (lambda p: p.write_bytes(b"SQLite format 2\0" + b"x" * 4000), r"file is not a database"),
    "tables missing": (lambda p: _sqlite(p, "CREATE TABLE other (x)"), r"tables missing: \['counts', 'inputs'"),
    "other format": (
        lambda p: (
            _sqlite(p, *[s for s in __import__("services.monitor.store", fromlist=["SCHEMA"]).SCHEMA.split(";")
                         if s.strip()], "INSERT INTO meta VALUES ('format', '9')")
        ),
        r"format: 9, expected 1",
    ),
}


@pytest.mark.parametrize("damage", STORE_DAMAGE)
def test_a_damaged_monitor_store_stops_the_cycle_naming_the_file_and_changes_nothing(project, damage):
    settings, paths = project
    make, why = STORE_DAMAGE[damage]
    paths.monitor_store.parent.mkdir(parents=True, exist_ok=True)
    make(paths.monitor_store)
    data = paths.monitor_store.read_bytes()
    run = cli("monitor", "--once", settings=settings)
    failed_clearly(run, paths.monitor_store, "is unreadable", why)
    assert paths.monitor_store.read_bytes() == data  # not replaced: counting from scratch is the operator's call
    assert not labelled_file(paths).exists() and not (paths.reports_dir / "latest.json").exists()


# --- logs/deployment_log.csv -----------------------------------------------------------------------------------
DEPLOY_DAMAGE = {
    "garbage row": (lambda row: b"garbage", r"1 field\(s\), expected 9"),
    "bad time": (lambda row: b"yesterday" + row[row.index(b","):], r"time 'yesterday' is not an ISO 8601 time"),
    "unknown event": (lambda row: row.replace(b",promote,", b",deploy,"), r"event 'deploy' is not one of"),
}


@pytest.mark.parametrize("damage", DEPLOY_DAMAGE)
@pytest.mark.parametrize("command", [("inference", "rollback"), ("monitor", "lineage", "<id>")])
def test_a_damaged_deployment_log_row_is_named_by_rollback_and_lineage(project, damage, command):
    settings, paths = project
    change, why = DEPLOY_DAMAGE[damage]
    pin_text(settings, "v2")
    rows = paths.deployment_log.read_bytes().split(b"\n")
    replace_line(paths.deployment_log, 3, change(rows[2]))  # line 3: the promote row
    before = settings.config_path.read_text()
    args = [request_ids(settings)[0] if a == "<id>" else a for a in command[1:]]
    failed_clearly(cli(command[0], *args, settings=settings), paths.deployment_log, f"{paths.deployment_log}:3", why)
    assert settings.config_path.read_text() == before  # no rollback computed from a history it could not read


def test_rollback_works_on_the_intact_log(project):
    settings, paths = project
    pin_text(settings, "v2")
    run = cli("inference", "rollback", settings=settings)
    assert run.code == 0, run.stderr
    assert "model_version: v1" in settings.config_path.read_text()


def test_a_row_torn_by_a_crash_is_closed_by_the_next_writer_and_named_by_readers(project):
    settings, paths = project
    with open(paths.deployment_log, "ab") as f:
        f.write(b"2026-01-01T00:10:00.000000Z,swa")  # the writer died here
    assert len(deploylog.read_rows(paths)) == 3  # a row being written is not read yet
    deploylog.append_event(paths, event="swap", version="v1", previous_version="v2", instance_id="i1", time=stamp(700))
    lines = paths.deployment_log.read_text().splitlines()
    assert lines[-2] == "2026-01-01T00:10:00.000000Z,swa" and lines[-1].startswith(stamp(700) + ",swap,v1,v2,")
    with pytest.raises(DataValidationError) as err:
        deploylog.serving_at(paths, stamp(800))
    clear_line(str(err.value), f"{paths.deployment_log}:5", "2 field(s)", r"expected 9")


# --- a pin to a version with metadata but no model.onnx ---------------------------------------------------------
def test_a_pin_to_a_version_without_its_model_file(project):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    settings, paths = project
    paths.model_file("v2").unlink()
    failed_clearly(cli("inference", "promote", "v2", settings=settings), paths.model_dir("v2"),
                   "model version v2 is incomplete", r"model\.onnx missing")
    pin_text(settings, "v2")
    failed_clearly(cli("trainer", "bootstrap", "--check", settings=settings), paths.model_file("v2"),
                   "model file missing", r"version v2")
    settings = load_settings(settings.config_path, env={})
    with TestClient(create_app(settings, instance_id="no-onnx")) as client:
        r = client.get("/ready")
        assert r.status_code == 503
        clear_line(r.json()["detail"], paths.model_file("v2"), "pinned v2 failed to load", r"model file missing")
    row = deploylog.read_rows(paths)[-1]
    assert (row["event"], row["version"]) == ("swap_failed", "v2") and str(paths.model_file("v2")) in row["detail"]


# --- monitor/labelled/labelled.jsonl (read by the retrain worker) ------------------------------------------------
def test_a_malformed_labelled_row_is_named_by_its_line(project):
    settings, paths = project
    from services.monitor.monitor import Monitor

    Monitor(settings=settings, redis_client=None).cycle()
    assert len(load_labelled(paths)) == ROWS
    path = labelled_file(paths)
    line = path.read_bytes().split(b"\n")[41]
    replace_line(path, 42, line.replace(b'"machine_failure":0', b'"machine_failure":5').replace(b'"machine_failure":1', b'"machine_failure":5'))
    with pytest.raises(DataValidationError) as err:
        load_labelled(paths)
    assert "\n" not in str(err.value)
    clear_line(str(err.value), f"{path}:42", "machine_failure", r"Input should be 0 or 1")

