"""Atomic writes and locked appends: nothing is written half, no line is lost or interleaved."""
from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from shared import atomic


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic.atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic.atomic_write_text(target, "new content")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_written_files_are_readable_by_other_services(tmp_path):
    target = tmp_path / "report.html"
    atomic.atomic_write_text(target, "<html></html>")
    assert target.stat().st_mode & 0o777 == 0o644


def _killed_writer(path):
    # Dies (like kill -9) between writing the temp file and renaming it.
    os.replace = lambda *a: os._exit(9)  # noqa: E731
    atomic.atomic_write_bytes(path, b"x" * 1_000_000)


def test_killed_writer_never_leaves_a_half_file(tmp_path):
    target = tmp_path / "model.bin"
    proc = mp.get_context("fork").Process(target=_killed_writer, args=(target,))
    proc.start()
    proc.join(10)
    assert proc.exitcode == 9
    assert not target.exists()


def _appender(path, tag, n):
    for i in range(n):
        atomic.append_line(path, f"{tag}-{i}-" + "y" * 300, fsync=False)


def test_concurrent_appends_never_interleave_or_lose_a_line(tmp_path):
    path = tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(path, t, 500)) for t in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    lines = path.read_text().splitlines()
    assert len(lines) == 2000
    assert all(line.endswith("y" * 300) and line.count("-") == 2 for line in lines)
    assert {line.split("-")[0] for line in lines} == set("abcd")


def test_write_all_finishes_short_writes(tmp_path, monkeypatch):
    """A write that lands only part of the buffer (disk nearly full, a signal) is continued, byte for byte."""
    path = tmp_path / "log.jsonl"
    real_write = os.write
    calls = []

    def short_write(fd, data):
        calls.append(len(data))
        return real_write(fd, bytes(data[:3]))  # at most 3 bytes per call

    monkeypatch.setattr(atomic.os, "write", short_write)
    atomic.append_bytes(path, b'{"a":1}\n{"b":2}\n')
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert len(calls) > 1


def test_append_bytes_refuses_a_partial_line(tmp_path):
    with pytest.raises(ValueError, match="whole lines"):
        atomic.append_bytes(tmp_path / "x", b"no newline")
    assert not (tmp_path / "x").exists()


def test_end_partial_line_closes_a_torn_tail_once(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert atomic.end_partial_line(fd, path) is True
        assert atomic.end_partial_line(fd, path) is False
    finally:
        os.close(fd)
    assert path.read_bytes() == b'{"a":1}\n{"b":\n'


@pytest.mark.parametrize("text, expected", [
    ("2026-01-02T03:04:05.123456Z", "2026-01-02T03:04:05.123456+00:00"),
    ("2026-01-02T03:04:05+02:00", "2026-01-02T01:04:05+00:00"),
    ("2026-01-02T03:04:05", "2026-01-02T03:04:05+00:00"),
])
def test_parse_utc_reads_every_form_the_services_write(text, expected):
    from shared.schemas import parse_utc

    assert parse_utc(text).isoformat() == expected


def test_parse_utc_names_bad_text():
    from shared.schemas import parse_utc

    with pytest.raises(ValueError, match="not an ISO 8601 time: 'yesterday'"):
        parse_utc("yesterday")
