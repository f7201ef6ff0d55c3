"""The lineage index: catch-ups read only what was appended, replaced files are reindexed, concurrent catch-ups
index a line once, torn lines wait, unknown ids are said to be unknown."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from shared.config import Settings
from shared.errors import ClockworkError, NotFoundError
from shared.lineage import find_feedback, find_prediction
from shared.lineage_index import LineageIndex
from shared.paths import Paths
from shared.schemas import FeedbackRecord, PredictionRecord
from tests.conftest import ROOT

INPUTS = {"type": "M", "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551.0,
          "torque_nm": 42.8, "tool_wear_min": 0.0}


def pred(rid: str) -> bytes:
    return (PredictionRecord(time="2026-01-01T00:00:00.000000Z", request_id=rid, model_version="v1", inputs=INPUTS,
                             probability=0.25, label=0, threshold=0.5).to_line() + "\n").encode()


def feedback(rid: str, label: int = 1) -> bytes:
    return (FeedbackRecord(time="2026-01-01T00:00:01.000000Z", request_id=rid, label=label).to_line() + "\n").encode()


def write(path, data: bytes, mode: str = "ab") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


@pytest.fixture
def paths(project: Settings) -> Paths:
    return Paths.from_settings(project)


def rows(paths: Paths) -> list[tuple]:
    with sqlite3.connect(paths.lineage_index) as con:
        return con.execute("SELECT request_id, file, start FROM records ORDER BY request_id, file, start").fetchall()


def test_a_catch_up_reads_only_the_bytes_appended_since_the_last(paths):
    log = paths.prediction_log("i1")
    first = b"".join(pred(f"a-{i}") for i in range(50))
    write(log, first)
    index = LineageIndex(paths)
    stats = index.catch_up()
    assert (stats.files, stats.bytes, stats.rows) == (1, len(first), 50)
    assert index.catch_up().bytes == 0  # nothing new: nothing read
    more = b"".join(pred(f"b-{i}") for i in range(7))
    write(log, more)
    write(paths.feedback_log("i1"), feedback("a-3"))
    stats = index.catch_up()
    assert (stats.files, stats.bytes, stats.rows) == (2, len(more) + len(feedback("a-3")), 8)
    (hit,) = [h for h in index.find("b-6") if h.kind == "prediction"]
    assert hit.path == log and hit.line == 57 and hit.text == pred("b-6")
    path, rec = find_prediction(paths, "a-3")
    assert path == log and rec.request_id == "a-3"
    assert [f["label"] for f in find_feedback(paths, "a-3")] == [1]
    assert paths.lineage_index.is_file()
    with sqlite3.connect(paths.lineage_index) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_replaced_file_is_reindexed_from_its_start(paths):
    log = paths.prediction_log("i1")
    write(log, b"".join(pred(f"old-{i}") for i in range(10)))
    index = LineageIndex(paths)
    index.catch_up()
    tmp = log.with_suffix(".tmp")
    write(tmp, b"".join(pred(f"new-{i}") for i in range(3)), "wb")
    tmp.replace(log)  # shorter than what was indexed
    stats = index.catch_up()
    assert stats.replaced == [str(log)] and stats.rows == 3
    assert index.find("old-1") == [] and [h.line for h in index.find("new-2")] == [3]
    write(tmp, b"".join(pred(f"newer-{i}") for i in range(20)), "wb")
    tmp.replace(log)  # longer, but its first bytes differ
    assert index.catch_up().replaced == [str(log)]
    assert index.find("new-2") == [] and [h.line for h in index.find("newer-19")] == [20]
    assert sorted({r[0] for r in rows(paths) if r[1] == max(x[1] for x in rows(paths))}) == sorted(
        f"newer-{i}" for i in range(20))
    log.unlink()
    assert index.catch_up().removed == [str(log)] and index.find("newer-3") == []


def test_a_torn_last_line_is_left_for_the_next_catch_up(paths):
    log = paths.prediction_log("i1")
    whole = pred("t-1")
    write(log, pred("t-0") + whole[:40])  # the writer is still writing (or died) in the middle of t-1
    index = LineageIndex(paths)
    assert index.catch_up().bytes == len(pred("t-0"))
    assert index.find("t-1") == []
    with pytest.raises(NotFoundError, match="t-1"):
        find_prediction(paths, "t-1")
    write(log, whole[40:])
    assert index.catch_up().rows == 1
    assert [(h.line, h.text) for h in index.find("t-1")] == [(2, whole)]


def test_a_lookup_of_an_unknown_id_says_so(paths):
    write(paths.prediction_log("i1"), pred("known"))
    assert LineageIndex(paths).find("unknown") == []
    with pytest.raises(NotFoundError, match=r"No prediction with request_id 'unknown' in .*logs/predictions"):
        find_prediction(paths, "unknown")
    assert find_prediction(paths, "known")[1].request_id == "known"


def test_a_lookup_reads_at_most_max_hits_copies_of_a_line(paths, monkeypatch):
    import shared.lineage_index as li

    monkeypatch.setattr(li, "MAX_HITS", 5)
    write(paths.prediction_log("i1"), pred("copy") * 8)
    write(paths.feedback_log("i1"), feedback("copy") * 2)
    hits = LineageIndex(paths).find("copy")
    expected = [("prediction", n) for n in range(1, 6)] + [("feedback", 1), ("feedback", 2)]
    assert [(h.kind, h.line) for h in hits] == expected


def test_a_malformed_line_is_found_and_named_by_its_line(paths):
    log = paths.prediction_log("i1")
    write(log, pred("m-0") + pred("m-1").replace(b'"probability"', b'"probabilty"'))
    with pytest.raises(ClockworkError, match=rf"{log}:2: the prediction record for request_id 'm-1' is malformed"):
        find_prediction(paths, "m-1")


def test_a_damaged_index_is_named_and_a_removed_one_is_rebuilt(paths):
    write(paths.prediction_log("i1"), pred("d-0"))
    paths.lineage_index.parent.mkdir(parents=True, exist_ok=True)
    paths.lineage_index.write_bytes(b"not a database" * 100)
    with pytest.raises(ClockworkError, match=rf"{paths.lineage_index}: the lineage index is unreadable.*remove it"):
        LineageIndex(paths).find("d-0")
    paths.lineage_index.unlink()
    assert [h.line for h in LineageIndex(paths).find("d-0")] == [1]


CATCH_UP = textwrap.dedent("""
    import sys, time
    from shared.config import load_settings
    from shared.paths import Paths
    import shared.lineage_index as li
    li.CHUNK = 4096  # many small transactions, so that the two processes interleave
    paths = Paths.from_settings(load_settings(sys.argv[1], env={}))
    while time.time() < float(sys.argv[2]):
        pass
    print(li.LineageIndex(paths).catch_up().rows)
""")


def test_two_processes_catching_up_at_once_index_each_line_once(paths, project):
    n = 20_000
    for k in range(2):
        write(paths.prediction_log(f"i{k}"), b"".join(pred(f"p{k}-{i}") for i in range(n)))
        write(paths.feedback_log(f"i{k}"), b"".join(feedback(f"p{k}-{i}") for i in range(0, n, 2)))
    import time

    go = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "-c", CATCH_UP, str(project.config_path), go], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    done = [int(o[0]) for o in outs]
    total = 2 * n + n  # predictions of both files + every second id's feedback in both
    assert sum(done) == total and min(done) > 0, done  # both took part, neither indexed a line twice
    found = rows(paths)
    assert len(found) == total == len(set(found))
    by_id: dict[str, int] = {}
    for rid, _, _ in found:
        by_id[rid] = by_id.get(rid, 0) + 1
    assert set(by_id.values()) == {1, 2} and by_id["p1-0"] == 2 and by_id["p1-1"] == 1  # prediction (+ feedback)
    assert LineageIndex(paths).catch_up().rows == 0


def test_the_monitor_cli_catches_the_index_up(paths, project, capsys):
    import json

    from services.monitor.__main__ import main

    write(paths.prediction_log("i1"), pred("c-0") + pred("c-1"))
    assert main(["lineage-index", "--config", str(project.config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 2
    assert main(["lineage-index", "--config", str(project.config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 0
