"""The versioned data store: immutable files under named versions, one manifest entry per file.

Every write goes through `DataStore.write_*`, which
- hashes the inputs before the step (`begin`) and again before the entry is written, refusing the entry
  if an input changed meanwhile;
- writes the file atomically, or, if the version already holds the same bytes, does nothing;
- refuses different content under an existing version, telling the caller to bump the version;
- appends one JSON line to manifest.txt under a lock.
The trainer uses the same code path to add data versions (training data + labelled production data).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from shared.atomic import append_line, atomic_write_bytes, locked, sha256_bytes, sha256_file
from shared.errors import DataValidationError, IntegrityError, NotFoundError, VersionExistsError, explain
from shared.gitinfo import git_info
from shared.paths import Paths, check_data_version, version_number
from shared.schemas import InputFile, ManifestEntry, utc_now

log = logging.getLogger(__name__)


def table_bytes(df: pd.DataFrame) -> bytes:
    """Deterministic CSV serialisation: same frame, same bytes."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def check_raw(paths: Paths) -> str:
    """The raw file must match the sha256 pinned in config.yaml; returns the hash."""
    expected = paths.settings.dataset.raw_sha256
    if not paths.raw_file.is_file():
        raise NotFoundError(
            f"raw data file not found: {paths.raw_file} (dataset.raw_file in {paths.settings.config_path})"
        )
    actual = sha256_file(paths.raw_file)
    if actual != expected:
        raise IntegrityError(
            f"raw data file {paths.raw_file} changed: expected sha256 {expected} (dataset.raw_sha256), "
            f"actual {actual}; the raw data is immutable"
        )
    return actual


@dataclass
class Step:
    """One producing step: its inputs hashed at the start, checked again at every write."""

    producer: str
    inputs: dict[Path, str] = field(default_factory=dict)

    def recheck(self) -> None:
        for p, digest in self.inputs.items():
            now = sha256_file(p) if p.is_file() else "missing"
            if now != digest:
                raise IntegrityError(
                    f"input {p} changed during the step (sha256 {digest} before, {now} now); entry refused"
                )


class DataStore:
    def __init__(self, *, paths: Paths) -> None:
        self.paths = paths
        self.volume = paths.volume

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.volume.resolve()).as_posix()
        except ValueError:
            return str(path)

    # --- reading --------------------------------------------------------------------------
    def entries(self, *, problems: list[str] | None = None) -> list[ManifestEntry]:
        """Every manifest entry, oldest first. A malformed line raises with its line number, or, when a
        `problems` list is given, is added to it (with its line number) and skipped."""
        if not self.paths.manifest.is_file():
            return []
        out = []
        with open(self.paths.manifest, "rb") as f:  # bytes: a line that is not UTF-8 is malformed, not a crash
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    out.append(ManifestEntry.model_validate_json(line))
                except ValidationError as e:
                    message = f"{self.paths.manifest}:{n}: malformed manifest entry: {explain(e)}"
                    if problems is None:
                        raise DataValidationError(message) from e
                    problems.append(message)
        return out

    def entries_for(self, data_version: str) -> list[ManifestEntry]:
        return [e for e in self.entries() if e.data_version == data_version]

    def entry_for_path(self, path: Path) -> ManifestEntry | None:
        rel = self.rel(path)
        found = [e for e in self.entries() if e.path == rel]
        return found[-1] if found else None

    def versions(self) -> list[str]:
        return sorted({e.data_version for e in self.entries()}, key=version_number)

    def next_version_number(self) -> int:
        """1 + the highest number among data versions in the manifest and on disk."""
        nums = [version_number(v) for v in self.versions()]
        for d in (self.paths.processed_dir, self.paths.production_dir):
            if d.is_dir():
                for child in d.iterdir():
                    try:
                        nums.append(version_number(check_data_version(child.name)))
                    except Exception:  # noqa: BLE001 - foreign folders are not versions
                        continue
        return max(nums, default=0) + 1

    def read_table(self, path: Path, *, verify: bool = True) -> pd.DataFrame:
        """Read a managed CSV, checking it against its manifest entry first."""
        if verify:
            entry = self.entry_for_path(path)
            if entry is None:
                raise NotFoundError(f"{path} has no manifest entry in {self.paths.manifest}; run prep first")
            actual = sha256_file(path) if path.is_file() else "missing"
            if actual != entry.sha256:
                raise IntegrityError(
                    f"{path}: sha256 {actual} does not match manifest {entry.sha256} ({entry.data_version})"
                )
        try:
            return pd.read_csv(path)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: file not found") from None
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise DataValidationError(f"{path}: not a readable CSV table: {reason}") from e

    # --- writing --------------------------------------------------------------------------
    def begin(self, *, producer: str, inputs: list[Path]) -> Step:
        hashed = {}
        for p in inputs:
            if not p.is_file():
                raise NotFoundError(f"input {p} not found for {producer}")
            hashed[p] = sha256_file(p)
        return Step(producer=producer, inputs=hashed)

    def write_table(
        self, step: Step, *, data_version: str, path: Path, df: pd.DataFrame, params: dict[str, Any]
    ) -> ManifestEntry:
        return self.write_bytes(
            step, data_version=data_version, path=path, data=table_bytes(df), rows=len(df), params=params
        )

    def write_bytes(
        self, step: Step, *, data_version: str, path: Path, data: bytes, rows: int, params: dict[str, Any]
    ) -> ManifestEntry:
        check_data_version(data_version)
        digest = sha256_bytes(data)
        rel = self.rel(path)
        with locked(self.paths.manifest):
            existing = [e for e in self.entries() if e.path == rel]
            on_disk = sha256_file(path) if path.is_file() else None
            if existing and existing[-1].sha256 != digest:
                raise VersionExistsError(
                    f"{rel} in data version {data_version} already holds different content "
                    f"(sha256 {existing[-1].sha256}, new {digest}); "
                    "versions are immutable: bump the version name in config.yaml"
                )
            if on_disk is not None and on_disk != digest:
                raise VersionExistsError(
                    f"{rel} already exists with different content (sha256 {on_disk}, new {digest}); "
                    "versions are immutable: bump the version name in config.yaml"
                )
            if existing and on_disk == digest:
                log.info("unchanged: %s (%s) sha256 %s", rel, data_version, digest[:12])
                return existing[-1]
            step.recheck()
            if on_disk is None:
                atomic_write_bytes(path, data)
            gi = git_info()
            entry = ManifestEntry(
                data_version=data_version,
                path=rel,
                sha256=digest,
                rows=rows,
                producer=step.producer,
                git_commit=gi["commit"],
                git_dirty=gi["dirty"],
                inputs=[InputFile(path=self.rel(p), sha256=h) for p, h in step.inputs.items()],
                params=json.loads(json.dumps(params, default=str)),
                created_at=utc_now(),
            )
            append_line(self.paths.manifest, entry.to_line())
            log.info("wrote %s (%s) rows=%d sha256 %s", rel, data_version, rows, digest[:12])
            return entry

    # --- checking -------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Re-hash every file the manifest lists; one message per malformed manifest line, mismatch or missing file."""
        problems: list[str] = []
        latest: dict[str, ManifestEntry] = {}
        for e in self.entries(problems=problems):
            latest[e.path] = e
        for rel, e in latest.items():
            p = self.volume / rel
            if not p.is_file():
                problems.append(f"missing: {rel} ({e.data_version}) expected sha256 {e.sha256}")
                continue
            actual = sha256_file(p)
            if actual != e.sha256:
                problems.append(f"mismatch: {rel} ({e.data_version}) expected sha256 {e.sha256}, actual {actual}")
        return problems
