"""Feedback lines a block at a time: the fast path of `services.monitor.rows.parse_feedback` for many lines.

An ingest step reads thousands of feedback lines per file. `BlockParser.feedback` parses a block of them with
orjson (mapped: no Python frame per line) and checks them column by column: every line an object with exactly
the record's keys, the times and request_ids text, every label the int 0 or 1 (a bool is not), each distinct
time ISO 8601 (parsed once, remembered: `when`). It accepts a block only when EVERY line passes, and returns
what `parse_feedback` returns for each; any other block (a blank or malformed line, a key too many, a label 2)
gives None and the caller reads that block line by line, so malformed lines are counted, listed and logged as
before. The fast path decides nothing on its own: it only skips work.

A step uses the labels stamped up to the prediction watermark and stops at the first newer one (it waits with
the lines after it). `first_late` guesses where that is by bisection on single lines of the chunk's bytes
(exact when a file's times never go back, as a writer appends them); the caller splits and parses the lines up
to and including the guess, then the rest about FEEDBACK_BLOCK bytes at a time until it meets a newer label,
so a step neither splits nor parses the lines it leaves for the next one.
"""

from __future__ import annotations

from datetime import datetime
from itertools import repeat
from operator import itemgetter

import orjson

from services.monitor.rows import OrphanLabel
from shared.schemas import FeedbackRecord, parse_utc

_FEEDBACK_KEYS = frozenset(FeedbackRecord.model_fields)
_NAMES = ("time", "request_id", "label")
assert frozenset(_NAMES) == _FEEDBACK_KEYS  # with the length check, a record holding each of them holds only them
_FIELDS = itemgetter(*_NAMES)
_LABELS = frozenset({0, 1})
_BAD = (ValueError, KeyError, TypeError)  # orjson.JSONDecodeError is a ValueError
# Parsed times kept between steps (a coalescing server stamps many lines with one time); cleared beyond this.
TIME_CACHE = 100_000
# Bytes of lines parsed at once after the first block of a file's step (see the module docstring).
FEEDBACK_BLOCK = 256 << 10

FeedbackBlock = tuple[list[str], list[OrphanLabel]]  # request_ids, labels (log order)


class BlockParser:
    def __init__(self) -> None:
        self._times: dict[str, datetime] = {}

    def when(self, text: str) -> datetime:
        """parse_utc(text), remembered (ValueError if it is not ISO 8601, as parse_utc)."""
        t = self._times.get(text)
        if t is None:
            if len(self._times) >= TIME_CACHE:
                self._times.clear()
            t = self._times[text] = parse_utc(text)
        return t

    def feedback(self, lines: list[bytes]) -> FeedbackBlock | None:
        """(request_ids, labels) of the lines if every one is a plain feedback record, else None."""
        try:
            records = list(map(orjson.loads, lines))
            if not records or _types(records) != {dict} or set(map(len, records)) != {len(_FEEDBACK_KEYS)}:
                return None
            times, ids, labels = zip(*map(_FIELDS, records), strict=True)
            if _types(times) != {str} or _types(ids) != {str} or _types(labels) != {int}:
                return None
            if not _LABELS.issuperset(labels):
                return None
            for t in set(times):
                self.when(t)
        except _BAD:
            return None
        return list(ids), list(map(tuple.__new__, repeat(OrphanLabel), zip(times, labels, strict=True)))

    def first_late(self, data: bytes, watermark: datetime) -> int:
        """Where the first line stamped after `watermark` starts in `data` (lines joined by newlines), found by
        bisection: a guess, right when the times never go back. len(data) + 1 if there is none, or if a line met
        on the way is not plain."""
        lo, hi = 0, len(data) + 1  # lo: a line's start; every line from hi on is late (if the times are ordered)
        while lo < hi:
            mid = (lo + hi) // 2
            start = data.rfind(b"\n", 0, mid) + 1  # the line holding byte mid: start..end
            end = data.find(b"\n", mid)
            end = len(data) if end < 0 else end
            try:
                t = orjson.loads(data[start:end])["time"]
                if type(t) is not str:
                    return len(data) + 1
                late = self.when(t) > watermark
            except _BAD:
                return len(data) + 1
            if late:
                hi = start
            else:
                lo = end + 1
        return lo


def _types(column) -> set[type]:
    return set(map(type, column))
