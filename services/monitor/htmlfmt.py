"""Small helpers for the report's pages: escaping and times a person reads."""

from __future__ import annotations

import html

from shared.schemas import parse_utc


def e(x: object) -> str:
    return html.escape(str(x))


def when(iso: str | None) -> str:
    """2026-01-02T03:04:05.123456Z -> 2026-01-02 03:04:05 UTC (the second is enough on a page; the JSON keeps
    the full time). None -> "-"; a text that is no time is shown as it is."""
    if not iso:
        return "-"
    try:
        return parse_utc(iso).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso
