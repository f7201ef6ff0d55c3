"""The model registry on the volume: models/vN/{model.onnx, metadata.json}, immutable, append-only.

Registering builds the whole version in a hidden temp folder inside models/ (`.tmp-<uuid>`) and then
claims the next free vN with one os.rename of that folder. Renaming a folder onto a name that exists
(with files in it) fails, so two trainers at once never get the same version: the loser tries N+1.
A version therefore appears only when complete and is never overwritten; a trainer killed mid-write
leaves only a `.tmp-*` folder, which versions() ignores (see `remove_stale_temp`).
Every version gets one readable line in models/model_metadata.log, appended after the rename under the
log's lock (an flock on the file, as shared.atomic.append_line takes). A trainer killed between the rename
and the append leaves a version without its line: `repair_metadata_log` (the worker calls it at start)
appends the missing lines in version order; a line is written only if the log lacks a complete one for
that version, so a repair racing a registration never doubles a line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shared.atomic import FILE_MODE, end_partial_line, fsync_dir, sha256_bytes, write_all
from shared.errors import ModelLoadError, NotFoundError, VersionExistsError, explain
from shared.onnx_model import OnnxModel, check_no_external_data, load_session, parse_model
from shared.paths import METADATA_FILE, MODEL_FILE, Paths, check_model_version
from shared.schemas import ModelMetadata, utc_now

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
_VERSION_DIR_RE = re.compile(r"^v([0-9]+)$")
MAX_CLAIM_ATTEMPTS = 1000


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def metadata_json(metadata: dict) -> bytes:
    return (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode("utf-8")


def log_line(md: dict) -> str:
    """One readable line per version for models/model_metadata.log."""
    cfg = md.get("config", {})
    mp = cfg.get("model_params", {})
    m = md.get("metrics") or {}
    pm = md.get("production_metrics") or {}
    trig = md.get("trigger") or {}
    gate = md.get("gate") or {}
    git = md.get("git") or {}

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    parts = [
        md["created_at"],
        md["version"],
        f"data={md['data_version']}",
        f"algorithm={mp.get('algorithm')}",
        f"n_estimators={mp.get('n_estimators')}",
        f"max_depth={mp.get('max_depth')}",
        f"derived={cfg.get('features', {}).get('derived')}",
        f"val_f1={f(m.get('f1'))}",
        f"val_precision={f(m.get('precision'))}",
        f"val_recall={f(m.get('recall'))}",
        f"prod_f1={f(pm.get('f1'))}",
        f"onnx_sha256={md['onnx_sha256']}",
        f"git={str(git.get('commit'))[:12]}{'+dirty' if git.get('dirty') else ''}",
        f"trigger={trig.get('kind')}:{trig.get('message_id') or trig.get('command') or '-'}",
        f"gate={gate.get('decision', '-') if gate else '-'}",
    ]
    return " ".join(str(p).replace("\n", " ") for p in parts)


def logged_versions(text: str) -> set[str]:
    """Versions with a complete line in model_metadata.log text (a torn last line does not count)."""
    out = set()
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) > 2 and _VERSION_DIR_RE.match(parts[1]) and parts[-1].startswith("gate="):
            out.add(parts[1])
    return out


DEFAULT_THRESHOLD = 0.5  # a model registered before thresholds were chosen, with no threshold recorded


def model_threshold(metadata: dict) -> float:
    """The threshold a registered model serves with when config does not override it (deployment.threshold
    null): the one the trainer chose (metadata decision.threshold), else the training threshold it recorded."""
    decision = metadata.get("decision") or {}
    if decision.get("threshold") is not None:
        return float(decision["threshold"])
    recorded = ((metadata.get("config") or {}).get("training") or {}).get("threshold")
    return DEFAULT_THRESHOLD if recorded is None else float(recorded)


class Registry:
    def __init__(self, *, paths: Paths) -> None:
        self.paths = paths

    @property
    def dir(self) -> Path:
        return self.paths.models_dir

    # --- reading --------------------------------------------------------------------------
    def _numbered_dirs(self) -> list[tuple[int, str]]:
        if not self.dir.is_dir():
            return []
        out = []
        for child in self.dir.iterdir():
            m = _VERSION_DIR_RE.match(child.name)
            if m and child.is_dir():
                out.append((int(m.group(1)), child.name))
        return sorted(out)

    def versions(self) -> list[str]:
        """Complete versions, sorted by number (temp folders and foreign names are ignored)."""
        return [
            name
            for _, name in self._numbered_dirs()
            if (self.dir / name / METADATA_FILE).is_file() and (self.dir / name / MODEL_FILE).is_file()
        ]

    def latest(self) -> str | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def exists(self, version: str) -> bool:
        return check_model_version(version) in self.versions()

    def metadata(self, version: str) -> dict:
        """metadata.json of a version, validated against shared.schemas.ModelMetadata."""
        path = self.paths.metadata_file(version)
        if not path.is_file():
            raise NotFoundError(f"No such model version: {version} in {self.dir}")
        try:
            md = ModelMetadata.model_validate_json(path.read_bytes())
        except ValidationError as e:
            raise ModelLoadError(f"{path}: malformed metadata: {explain(e)}") from e
        except OSError as e:
            raise ModelLoadError(f"{path}: cannot read metadata: {e.strerror}") from e
        if md.version != version:
            raise ModelLoadError(f"{path}: metadata names version {md.version}, folder is {version}")
        return md.model_dump(mode="json")

    def load_verified(self, version: str) -> tuple[bytes, dict]:
        """(model bytes, metadata) after checking the sha256 against metadata and refusing external data."""
        md = self.metadata(version)
        model_path = self.paths.model_file(version)
        try:
            data = model_path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"model file missing: {model_path} (version {version})") from None
        actual = sha256_bytes(data)
        if actual != md["onnx_sha256"]:
            raise ModelLoadError(
                f"{model_path}: sha256 {actual} does not match metadata onnx_sha256 {md['onnx_sha256']} "
                f"(version {version}); refusing to load"
            )
        check_no_external_data(parse_model(data, name=str(model_path)), name=f"{model_path} (version {version})")
        return data, md

    def load_model(self, version: str) -> tuple[OnnxModel, dict]:
        data, md = self.load_verified(version)
        return load_session(data, name=f"model {version}", features=self.paths.settings.dataset.feature_names), md

    def find_by_trigger(self, message_id: str) -> str | None:
        """The version a retrain message already produced, if any (at-least-once delivery, one model)."""
        for version in self.versions():
            try:
                trig = self.metadata(version).get("trigger") or {}
            except ModelLoadError as e:
                log.warning("cannot tell whether %s came from message %s: %s", version, message_id, e)
                continue
            if trig.get("message_id") == message_id:
                return version
        return None

    # --- writing --------------------------------------------------------------------------
    def register(self, *, model_bytes: bytes, metadata: dict) -> dict:
        """Store a new version atomically; returns the metadata with `version`, `created_at`, `onnx_sha256` set.

        `metadata` holds every other ModelMetadata field. The version number is claimed by renaming a
        complete temp folder, so concurrent registrations get distinct numbers and none is ever partial.
        """
        digest = sha256_bytes(model_bytes)
        if metadata.get("onnx_sha256") not in (None, digest):
            raise ModelLoadError(
                f"metadata onnx_sha256 {metadata['onnx_sha256']} does not match the model bytes ({digest})"
            )
        check_no_external_data(parse_model(model_bytes, name="candidate model"), name="candidate model")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            _write_synced(tmp / MODEL_FILE, model_bytes)
            md = dict(metadata, onnx_sha256=digest, onnx_bytes=len(model_bytes), created_at=utc_now())
            md = self._claim(tmp, md)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        version = md["version"]
        self._log_versions([version], known={version: md})
        log.info(
            "registered model %s (sha256 %s, data %s) in %s", version, digest[:12], md.get("data_version"), self.dir
        )
        return md

    def _claim(self, tmp: Path, md: dict) -> dict:
        """Rename the complete temp folder to the next free vN; returns the metadata as stored."""
        numbers = [n for n, _ in self._numbered_dirs()]
        n = max(numbers, default=0) + 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            version = f"v{n}"
            record = ModelMetadata.model_validate(dict(md, version=version)).model_dump(mode="json")
            _write_synced(tmp / METADATA_FILE, metadata_json(record))
            fsync_dir(tmp)
            target = self.dir / version
            if not target.exists():
                try:
                    os.rename(tmp, target)
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                else:
                    fsync_dir(self.dir)
                    return record
            n += 1
        raise VersionExistsError(f"could not claim a model version in {self.dir} after {MAX_CLAIM_ATTEMPTS} attempts")

    def repair_metadata_log(self) -> list[str]:
        """Append the model_metadata.log lines of registered versions that lack one (version order); returns them."""
        added = self._log_versions(self.versions())
        if added:
            log.warning("model_metadata.log lacked %s: lines appended from their metadata.json", ", ".join(added))
        return added

    def _log_versions(self, versions: list[str], *, known: dict[str, dict] | None = None) -> list[str]:
        """Under the log's lock: append a line for each of `versions` the log lacks; returns those versions."""
        path = self.paths.metadata_log
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            logged = logged_versions(path.read_bytes().decode("utf-8", errors="replace"))
            lines, added = [], []
            for version in versions:
                if version in logged:
                    continue
                try:
                    md = (known or {}).get(version) or self.metadata(version)
                except (ModelLoadError, NotFoundError) as e:
                    log.error("cannot write the model_metadata.log line of %s: %s", version, e)
                    continue
                lines.append(log_line(md))
                added.append(version)
            if lines:
                end_partial_line(fd, path)
                write_all(fd, ("\n".join(lines) + "\n").encode("utf-8"))
                os.fsync(fd)
            return added
        finally:
            os.close(fd)  # releases the lock

    def remove_stale_temp(self, *, older_than_s: float = 3600.0) -> list[str]:
        """Delete `.tmp-*` folders left by killed trainers (older than `older_than_s`)."""
        removed: list[str] = []
        if not self.dir.is_dir():
            return removed
        now = time.time()
        for child in self.dir.iterdir():
            if child.name.startswith(TEMP_PREFIX) and child.is_dir() and now - child.stat().st_mtime > older_than_s:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
                log.info("removed stale temp folder %s", child)
        return removed
