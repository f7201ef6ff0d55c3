"""What the console reads: the volume's records and Redis, as plain rows for the pages. Reads only, never writes.

Every read is of a bounded thing: the registry's metadata files (cached by path, mtime and size, so a page over
100 versions re-reads only what changed), the deployment log, the manifest, the newest per-cycle monitor reports
(cached likewise, at most MAX_REPORTS), the retrain queue's lists and job hashes (at most MAX_JOBS), and one
lineage lookup through the lineage index. The prediction logs are never scanned.

Reports are read as JSON (the schema is services.monitor.report_model.MonitorReport; services do not import each
other, so the console reads the fields it shows and tolerates a report without them).
A crash leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared import deploylog
from shared.datastore import DataStore
from shared.errors import ClockworkError
from shared.paths import Paths, RedisKeys
from shared.queue import RetrainQueue
from shared.registry import Registry, model_threshold
from shared.schemas import ManifestEntry

log = logging.getLogger(__name__)

MAX_REPORTS = 200  # newest per-cycle reports the monitoring page plots
MAX_JOBS = 500  # job hashes the jobs page lists
MAX_DEAD = 200  # dead letters the jobs page lists (newest first)
REPORT_NAME_RE = re.compile(r"^(report-[0-9TZ]+|latest)\.(json|html)$")


class _FileCache:
    """path -> parsed content, re-read only when the file's (mtime_ns, size) changes."""

    def __init__(self) -> None:
        self._items: dict[Path, tuple[tuple[int, int], Any]] = {}

    def get(self, path: Path, parse: Callable[[Path], Any]) -> Any:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._items.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = parse(path)
        self._items[path] = (stamp, value)
        return value


class ConsoleReader:
    """The console's reads over one project's volume (`paths`) and one Redis client (`redis`, may be down)."""

    def __init__(self, *, paths: Paths, redis) -> None:
        self.paths = paths
        self.redis = redis
        self.registry = Registry(paths=paths)
        self.queue = RetrainQueue.from_settings(paths.settings, redis=redis)
        self.keys = RedisKeys.from_settings(paths.settings)
        self._metadata = _FileCache()
        self._reports = _FileCache()

    # --- registry ---------------------------------------------------------------------------
    def metadata(self, version: str) -> dict:
        return self._metadata.get(self.paths.metadata_file(version), lambda _p: self.registry.metadata(version))

    def versions(self) -> list[dict]:
        """One row per complete version, oldest first: metrics, threshold, data version, gate (or `error`)."""
        rows: list[dict[str, Any]] = []
        for version in self.registry.versions():
            try:
                md = self.metadata(version)
            except (ClockworkError, OSError) as e:
                rows.append({"version": version, "error": str(e)})
                continue
            rows.append(
                {
                    "version": version,
                    "created_at": md["created_at"],
                    "data_version": md["data_version"],
                    "metrics": md.get("metrics") or {},
                    "production_metrics": md.get("production_metrics") or {},
                    "threshold": model_threshold(md),
                    "policy": (md.get("decision") or {}).get("policy"),
                    "gate": md.get("gate") or {},
                    "trigger": md.get("trigger") or {},
                    "algorithm": ((md.get("config") or {}).get("model_params") or {}).get("algorithm"),
                    "onnx_sha256": md["onnx_sha256"],
                    "git": (md.get("git") or {}).get("commit"),
                }
            )
        return rows

    # --- deployments ------------------------------------------------------------------------
    def deployments(self) -> list[dict]:
        return deploylog.read_rows(self.paths)

    def instances(self, rows: list[dict] | None = None) -> list[dict]:
        """The latest start/swap row of every instance (what each serves), newest first."""
        latest: dict[str, dict] = {}
        for row in self.deployments() if rows is None else rows:
            if row["event"] in deploylog.SERVING_EVENTS:
                latest[row["instance_id"]] = row
        return sorted(latest.values(), key=lambda r: r["time"], reverse=True)

    # --- data -------------------------------------------------------------------------------
    def manifest(self, problems: list[str] | None = None) -> list[ManifestEntry]:
        return DataStore(paths=self.paths).entries(problems=problems)

    def raw_rel(self) -> str:
        return DataStore(paths=self.paths).rel(self.paths.raw_file)

    # --- monitoring -------------------------------------------------------------------------
    def latest_report(self) -> dict | None:
        path = self.paths.reports_dir / "latest.json"
        if not path.is_file():
            return None
        return self._reports.get(path, _read_json)

    def reports(self) -> list[dict]:
        """The newest per-cycle JSON reports (at most MAX_REPORTS), oldest first; unreadable ones skipped."""
        folder = self.paths.reports_dir
        if not folder.is_dir():
            return []
        names = sorted(p.name for p in folder.glob("report-*.json"))[-MAX_REPORTS:]
        out = []
        for name in names:
            try:
                report = self._reports.get(folder / name, _read_json)
            except (OSError, ValueError) as e:
                log.warning("console: skipping report %s: %s", name, e)
                continue
            out.append(report | {"_json": name, "_html": name[: -len(".json")] + ".html"})
        return out

    def report_file(self, name: str) -> Path | None:
        """A report file by its name (report-*.html/json, latest.*), or None for any other name or a missing one."""
        if not REPORT_NAME_RE.match(name):
            return None
        path = self.paths.reports_dir / name
        return path if path.is_file() else None

    # --- Redis ------------------------------------------------------------------------------
    def queue_depth(self) -> dict[str, int]:
        return {
            "queued": int(self.redis.llen(self.keys.retrain_queue)),
            "processing": int(self.redis.llen(self.keys.processing_queue)),
            "dead": int(self.redis.llen(self.keys.dead_letter_queue)),
        }

    def jobs(self) -> list[dict]:
        """Job hashes (at most MAX_JOBS), newest first by when they were queued, each with its lease view."""
        out = []
        for key in self.redis.scan_iter(match=f"{self.keys.job_key_prefix}:*", count=500):
            key = key.decode() if isinstance(key, bytes) else key
            job_id = key[len(self.keys.job_key_prefix) + 1 :]
            try:
                out.append(self.queue.job_view(job_id))
            except ClockworkError:
                continue  # gone between the scan and the read
            if len(out) >= MAX_JOBS:
                break
        return sorted(out, key=lambda j: j.get("queued_at") or j.get("started_at") or "", reverse=True)

    def dead_letters(self) -> list[dict]:
        raw = self.redis.lrange(self.keys.dead_letter_queue, 0, MAX_DEAD - 1)
        out = []
        for item in raw:
            text = item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
            try:
                entry = json.loads(text)
            except ValueError:
                entry = {"raw": text, "reason": "(dead-letter record is not JSON)"}
            out.append(entry | {"_record": text})
        return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_bytes())
