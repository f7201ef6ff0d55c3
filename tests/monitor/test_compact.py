"""Closed log segments -> Parquet: round trip, manifest, idempotence, crashes, lineage, retention."""
from __future__ import annotations

import json
import os
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.monitor import compact as compact_mod
from services.monitor.compact import Compactor
from services.monitor.ingest import Ingestor
from shared.atomic import sha256_file
from shared.lineage import lineage
from shared.lineage_index import LineageIndex
from shared.paths import Paths, segment_name
from tests.monitor.helpers import T0, append, day2, open_store, prediction_lines, stamp

NOW = T0 + timedelta(hours=3)  # the same UTC day as the records: only rotated segments are closed


def with_logs(paths: Paths, **logs) -> Paths:
    s = paths.settings
    return Paths.from_settings(s.model_copy(update={"logs": s.logs.model_copy(update=logs)}))


def write_segments(
    paths: Paths, n: int = 120, *, versions=("v1",), spacing_s: float = 1.0
) -> tuple[list[dict], list[dict], list[str]]:
    """Instance i1: predictions in two segments (the first closed), all labels in the first feedback segment and
    one in an open second one; each version serves every len(versions)-th row; rows `spacing_s` apart, each label
    half a second after its prediction. Returns (prediction records, feedback records, request ids)."""
    preds, fbs, ids = prediction_lines(paths, day2(paths, "natural").head(n))
    records = [json.loads(x) | {"model_version": versions[i % len(versions)], "time": stamp(i * spacing_s)}
               for i, x in enumerate(preds)]  # fmt: skip
    labels = [json.loads(x) | {"time": stamp(i * spacing_s + 0.5)} for i, x in enumerate(fbs)]
    preds = [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records]  # as if served by each version
    fbs = [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in labels]
    half = len(preds) // 2
    append(paths.prediction_log(segment_name("i1", 0)[:-6]), preds[:half])
    append(paths.prediction_log_dir / segment_name("i1", 1), preds[half:])
    append(paths.feedback_log("i1"), fbs[:-1])
    append(paths.feedback_log_dir / segment_name("i1", 1), fbs[-1:])
    return [json.loads(x) for x in preds], [json.loads(x) for x in fbs], ids


def ingest_and_compact(paths: Paths, *, now=NOW):
    with open_store(paths) as store:
        Ingestor(paths=paths, dataset=paths.settings.dataset, window_size=500, drift_window=500).run(store)
        return Compactor(settings=paths.settings, paths=paths).run(store, now=now)


def manifest(paths: Paths) -> list[dict]:
    return [json.loads(x) for x in paths.parquet_manifest.read_text().splitlines()]


def parquet_files(paths: Paths) -> list:
    return sorted(paths.parquet_dir.rglob("*.parquet"))


def test_compaction_round_trip_rows_types_and_manifest_sha256(trained):
    paths = Paths.from_settings(trained)
    preds, fbs, _ = write_segments(paths, versions=("v1", "v2"))
    first = paths.prediction_log("i1")
    lines = first.read_bytes().count(b"\n")
    segment_sha = sha256_file(first)
    empty = paths.prediction_log_dir / "i2.jsonl"  # a segment whose writer never wrote (closed by i2@000001)
    empty.touch()
    (paths.prediction_log_dir / segment_name("i2", 1)).touch()
    out = ingest_and_compact(paths)
    assert sorted(out.segments) == ["logs/feedback/i1.jsonl", "logs/predictions/i1.jsonl", "logs/predictions/i2.jsonl"]
    assert not first.exists() and not paths.feedback_log("i1").exists() and not empty.exists()  # compacted, removed
    assert (paths.prediction_log_dir / segment_name("i1", 1)).exists()  # the open segment stays
    entries = {e["kind"]: e for e in manifest(paths) if e["segment"] != "logs/predictions/i2.jsonl"}
    pred_entry = entries["prediction"]
    assert pred_entry["segment_sha256"] == segment_sha and pred_entry["rows"] == lines and pred_entry["malformed"] == 0
    for f in pred_entry["files"] + entries["feedback"]["files"]:
        assert sha256_file(paths.volume / f["path"]) == f["sha256"]
        assert pq.read_metadata(paths.volume / f["path"]).num_rows == f["rows"]
    assert {tuple(sorted(f["partition"].items())) for f in pred_entry["files"]} == {
        (("day", "2026-01-01"), ("model_version", "v1")),
        (("day", "2026-01-01"), ("model_version", "v2")),
    }
    # Read back the way an engine does (partition discovery): the records of the compacted segment, typed.
    table = pq.read_table(paths.parquet_dir / "predictions", partitioning="hive")
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("type").type == pa.string()
    assert table.schema.field("torque_nm").type == pa.float64()
    got = {r["request_id"]: r for r in table.to_pylist()}
    compacted = [p for p in preds if p["request_id"] in got]
    assert len(compacted) == lines == len(got)
    for p in compacted:
        row = got[p["request_id"]]
        assert str(row["model_version"]) == p["model_version"]
        assert row["time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ") == p["time"]
        assert row["probability"] == p["probability"] and row["label"] == p["label"]
        assert {k: row[k] for k in p["inputs"]} == p["inputs"]
    fb = pq.read_table(paths.parquet_dir / "feedback", partitioning="hive")
    assert sorted(fb.column("request_id").to_pylist()) == sorted(f["request_id"] for f in fbs[:-1])


def test_rerun_is_idempotent_and_unread_segments_wait(trained):
    paths = Paths.from_settings(trained)
    write_segments(paths)
    with open_store(paths) as store:  # nothing read by the monitor yet: nothing compacted
        out = Compactor(settings=paths.settings, paths=paths).run(store, now=NOW)
    assert not out.segments and "logs/predictions/i1.jsonl" in out.waiting
    assert paths.prediction_log("i1").exists() and not parquet_files(paths)
    ingest_and_compact(paths)
    files = {p: sha256_file(p) for p in parquet_files(paths)}
    before = paths.parquet_manifest.read_text()
    again = ingest_and_compact(paths)
    assert not again.segments and not again.finished
    assert paths.parquet_manifest.read_text() == before
    assert {p: sha256_file(p) for p in parquet_files(paths)} == files


@pytest.mark.parametrize("crash_at", ["before_manifest", "after_manifest"])
def test_a_crash_leaves_the_segment_or_a_listed_parquet_and_a_rerun_finishes(trained, monkeypatch, crash_at):
    paths = Paths.from_settings(trained)
    write_segments(paths)
    segment = paths.prediction_log("i1")
    rows = segment.read_bytes().count(b"\n")

    class Killed(BaseException):
        pass

    def kill(*args, **kw):
        raise Killed

    if crash_at == "before_manifest":  # the Parquet files are written, the manifest line is not
        monkeypatch.setattr(compact_mod, "append_line", kill)
    else:  # listed, not yet removed
        monkeypatch.setattr(Compactor, "finish", kill)
    with pytest.raises(Killed):
        ingest_and_compact(paths)
    assert segment.exists()
    listed = paths.parquet_manifest.is_file() and paths.parquet_manifest.read_text().strip()
    assert bool(listed) == (crash_at == "after_manifest")
    monkeypatch.undo()
    out = ingest_and_compact(paths)
    assert not segment.exists()
    entries = [e for e in manifest(paths) if e["segment"] == "logs/predictions/i1.jsonl"]
    assert len(entries) == 1  # never listed twice
    table = pq.read_table(paths.parquet_dir / "predictions", partitioning="hive")
    assert table.num_rows == rows == len(set(table.column("request_id").to_pylist()))  # no row twice
    assert not [p for p in paths.parquet_dir.rglob("*.tmp")]
    assert ("logs/predictions/i1.jsonl" in out.finished) == (crash_at == "after_manifest")
    with open_store(paths) as store:
        assert "predictions/i1.jsonl" not in store.offsets()  # a later file of that name is read from 0


def test_lineage_finds_a_compacted_request_in_parquet(trained):
    paths = Paths.from_settings(trained)
    preds, fbs, ids = write_segments(paths)
    LineageIndex(paths).catch_up()
    before = lineage(paths, ids[3])
    ingest_and_compact(paths)
    assert not paths.prediction_log("i1").exists()
    after = lineage(paths, ids[3])
    assert after["prediction"]["log"].startswith("logs/parquet/predictions/day=2026-01-01/model_version=v1/part-i1~")
    strip = {"log"}
    assert {k: v for k, v in after["prediction"].items() if k not in strip} == {
        k: v for k, v in before["prediction"].items() if k not in strip
    }
    assert [f["label"] for f in after["feedback"]] == [fbs[3]["label"]]
    assert after["model"] == before["model"]
    assert after["deployment"] == before["deployment"]
    # A deleted index is rebuilt: the open segments from the logs, the compacted ones from the Parquet manifest.
    for p in paths.lineage_index.parent.glob(paths.lineage_index.name + "*"):
        p.unlink()
    assert lineage(paths, ids[-1])["prediction"]["request_id"] == ids[-1]
    rebuilt = lineage(paths, ids[3])
    assert rebuilt["prediction"] == after["prediction"] and rebuilt["feedback"] == after["feedback"]


def test_malformed_lines_are_kept_verbatim_and_kept_segments_are_not_compacted_twice(trained):
    paths = with_logs(Paths.from_settings(trained), keep_segments=True)
    write_segments(paths)
    segment = paths.prediction_log("i1")
    append(segment, ['{"not": "a record"}'])
    with open(segment, "ab") as f:
        f.write(b'{"torn": ')  # a writer killed mid-line left this; a later process opened a new segment
    rows = segment.read_bytes().count(b"\n") - 1
    out = ingest_and_compact(paths)
    assert "logs/predictions/i1.jsonl" in out.segments and segment.exists()  # kept
    entry = next(e for e in manifest(paths) if e["segment"] == "logs/predictions/i1.jsonl")
    assert entry["rows"] == rows and entry["malformed"] == 2
    bad = [json.loads(x) for x in (paths.volume / entry["malformed_file"]["path"]).read_text().splitlines()]
    assert [(b["line"], b["text"]) for b in bad] == [(rows + 1, '{"not": "a record"}'), (rows + 2, '{"torn": ')]
    assert sha256_file(paths.volume / entry["malformed_file"]["path"]) == entry["malformed_file"]["sha256"]
    before = paths.parquet_manifest.read_text()
    again = ingest_and_compact(paths)
    assert not again.segments and not again.finished and paths.parquet_manifest.read_text() == before
    # the kept segment is not indexed a second time: one hit per request
    rid = json.loads(segment.read_bytes().splitlines()[0])["request_id"]
    assert len([h for h in LineageIndex(paths).find(rid) if h.kind == "prediction"]) == 1


def test_retention_removes_old_day_partitions_and_records_it(trained):
    paths = with_logs(Paths.from_settings(trained), retention_days=2)
    write_segments(paths)
    ingest_and_compact(paths)
    assert parquet_files(paths)
    out = ingest_and_compact(paths, now=T0 + timedelta(days=2, hours=1))  # day 2026-01-01 is within 2 days
    assert not out.expired and parquet_files(paths)
    out = ingest_and_compact(paths, now=T0 + timedelta(days=3, hours=1))
    assert sorted(out.expired) == ["feedback/day=2026-01-01", "predictions/day=2026-01-01"]
    assert not parquet_files(paths)
    expiries = [e for e in manifest(paths) if e["event"] == "expire"]
    assert {e["kind"] for e in expiries} == {"prediction", "feedback"}
    assert all(e["day"] == "2026-01-01" and e["files"] for e in expiries)


def test_an_idle_instance_newest_segment_of_an_earlier_day_is_compacted(trained):
    paths = Paths.from_settings(trained)
    write_segments(paths)
    newest = paths.prediction_log_dir / segment_name("i1", 1)
    yesterday = (T0 - timedelta(days=1)).timestamp()
    os.utime(newest, (yesterday, yesterday))
    out = ingest_and_compact(paths)
    assert "logs/predictions/i1@000001.jsonl" in out.segments and not newest.exists()
    fd = os.open(paths.feedback_log_dir / segment_name("i1", 1), os.O_RDONLY)  # held by a writer: stays
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        os.utime(paths.feedback_log_dir / segment_name("i1", 1), (yesterday, yesterday))
        out = ingest_and_compact(paths)
        assert "logs/feedback/i1@000001.jsonl" not in out.segments
    finally:
        os.close(fd)


def test_the_compact_command_answers_what_it_did(trained, capsys):
    from services.monitor.__main__ import main

    paths = Paths.from_settings(trained)
    write_segments(paths)
    with open_store(paths) as store:
        Ingestor(paths=paths, dataset=paths.settings.dataset, window_size=500, drift_window=500).run(store)
    assert main(["compact", "--config", str(trained.config_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["segments"]) == ["logs/feedback/i1.jsonl", "logs/predictions/i1.jsonl"] and out["files"] == 2


def test_the_row_parser_accepts_and_refuses_what_the_schemas_do(trained):
    from pydantic import ValidationError

    from shared.logtables import RowParser

    paths = Paths.from_settings(trained)
    preds, fbs, _ = prediction_lines(paths, day2(paths, "natural").head(2))
    parse, good = RowParser("prediction", trained.dataset), json.loads(preds[0])
    part, row = parse(preds[0].encode(), 7)
    assert part == ("2026-01-01", "v1") and row["source_line"] == 7 and row["torque_nm"] == good["inputs"]["torque_nm"]
    assert RowParser("feedback", trained.dataset)(fbs[0].encode(), 1)[1]["label"] == json.loads(fbs[0])["label"]
    for bad in (good | {"label": 2}, good | {"probability": "x"}, good | {"extra": 1},
                good | {"inputs": good["inputs"] | {"type": "Q"}}, good | {"inputs": {}}, good | {"time": "yesterday"}):
        with pytest.raises((ValidationError, ValueError)):
            parse(json.dumps(bad).encode(), 1)


def test_served_requests_rotate_compact_in_a_cycle_and_lineage_answers_from_parquet(trained, redis_client):
    """The real service with a small rotation bound, a monitor cycle compacting, GET /lineage over HTTP."""
    from fastapi.testclient import TestClient

    from services.inference.app import create_app
    from services.monitor.monitor import Monitor
    from tests.inference.test_api import SNAKE

    settings = with_logs(Paths.from_settings(trained), rotate_bytes=1500).settings
    paths = Paths.from_settings(settings)
    with TestClient(create_app(settings, instance_id="rot-1", api_key=None)) as client:
        ids = [client.post("/predict", json=SNAKE).json()["request_id"] for _ in range(12)]
        assert client.post("/feedback", json={"request_id": ids[0], "label": 1}).status_code == 200
        segments = sorted(p.name for p in paths.prediction_log_dir.glob("rot-1*.jsonl"))
        assert len(segments) >= 3 and segments[0] == "rot-1.jsonl"
        Monitor(settings=settings, redis_client=redis_client).cycle()
        assert not paths.prediction_log("rot-1").exists()  # closed, read, indexed: compacted and removed
        assert len(list(paths.prediction_log_dir.glob("rot-1*.jsonl"))) == 1  # the open segment stays
        listed = [e for e in manifest(paths) if e["kind"] == "prediction"]
        still_open = (paths.prediction_log_dir / segments[-1]).read_bytes().count(b"\n")
        assert sum(e["rows"] for e in listed) == 12 - still_open
        answer = client.get(f"/lineage/{ids[0]}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["prediction"]["request_id"] == ids[0] and body["prediction"]["log"].endswith(".parquet")
        assert body["prediction"]["inputs"] == SNAKE and [f["label"] for f in body["feedback"]] == [1]
        assert client.get(f"/lineage/{ids[-1]}").json()["prediction"]["log"].endswith(".jsonl")
