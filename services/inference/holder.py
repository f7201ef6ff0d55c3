"""The served model and its hot swap.

`ModelHolder.current` is the one reference every request reads, once: a `ServingModel` (version,
session, metadata, a preallocated input row). A swap builds and checks the new `ServingModel` beside
the old one (in a worker thread, so serving goes on) and then replaces the reference in one
assignment on the event loop, so every response names exactly one version and no request fails.

`ConfigWatcher` polls config.yaml every `deployment.reload_interval_s`. It compares the file's bytes,
so editors that write in place and editors that replace the file (new inode) are both seen. A new pin
is loaded; a missing, corrupt or invalid version leaves the old one serving, writes a `swap_failed`
row, counts in the metrics and shows in /ready. An invalid config.yaml is logged and reported, and the
service keeps serving. A failed pin is retried when the version's files change (e.g. it was pinned
before the trainer finished writing it), not in a loop.

The live shadow (`deployment.shadow_version`): `ModelHolder.shadow`, loaded and checked exactly like a pin
(sha256, no external data, the probe) and followed the same way: the watcher adds, changes or removes it when the
key changes, without a restart. It is the version config names or nothing: a shadow that fails to load leaves no
shadow (logged, counted in `clockwork_shadow_load_failures`, shown in /ready's detail and /model; retried when its
files change) and never touches the served model. The predictor reads `shadow` once per batch (predictor.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.inference.metrics import Metrics, RouteMetrics
from shared import deploylog
from shared.config import Settings, load_settings
from shared.dataset import ONNX_INPUT, ONNX_OUTPUT
from shared.errors import ClockworkError, ConfigError
from shared.gitinfo import git_info
from shared.onnx_model import OnnxModel, load_session
from shared.paths import Paths
from shared.registry import Registry, model_threshold
from shared.schemas import utc_now

log = logging.getLogger(__name__)

LIVE_KEYS = {"model_version", "shadow_version"}  # deployment keys a config.yaml edit applies without a restart


@dataclass(eq=False)
class ServingModel:
    """One loaded, checked model version as served: session, metadata, one-row input and its metrics.
    `width`: the number of features of a reading (the dataset's), the width of `row`."""

    version: str
    model: OnnxModel
    metadata: dict
    onnx_sha256: str
    loaded_at: str
    width: int
    threshold: float  # a probability at or above it is answered 1 (config's override, else the model's own)
    row: np.ndarray = field(init=False)
    predict_route: RouteMetrics | None = None
    batch_route: RouteMetrics | None = None

    def __post_init__(self) -> None:
        # One-row calls go through an IO binding on preallocated arrays: no input conversion, no output
        # allocation (a few microseconds of a ~10 us call). Used only on the event loop thread.
        self.row = np.zeros((1, self.width), dtype=np.float32)
        session = self.model.session
        self._out = np.zeros((1, 1), dtype=np.float32)
        self._binding = session.io_binding()
        self._binding.bind_cpu_input(ONNX_INPUT, self.row)
        self._binding.bind_output(ONNX_OUTPUT, "cpu", 0, np.float32, [1, 1], self._out.ctypes.data)
        self._run_bound = session.run_with_iobinding

    def predict_row(self) -> float:
        """Probability for the reading in `self.row` (fill it first; no await in between)."""
        self._run_bound(self._binding)
        return float(self._out[0, 0])

    def predict_many(self, readings: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(readings)


def serving_threshold(override: float | None, metadata: dict) -> float:
    """config's deployment.threshold when set, else the threshold the trainer chose for this model."""
    return override if override is not None else model_threshold(metadata)


def load_serving_model(paths: Paths, version: str, *, probe: np.ndarray) -> ServingModel:
    """Load `version` from the registry (sha256, no external data, signature) and check it answers `probe`
    (float32 [2, F], a reading of the dataset as the model's input, reading.ReadingSchema.probe). Blocking."""
    model_bytes, metadata = Registry(paths=paths).load_verified(version)
    model = load_session(model_bytes, name=f"model {version}", features=paths.settings.dataset.feature_names)
    try:
        probs = model.predict_proba(probe)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
        raise ClockworkError(f"model {version}: fails on a probe reading: {e}") from e
    if probs.shape != (len(probe),) or not all(math.isfinite(p) and -1e-6 <= p <= 1.0 + 1e-6 for p in probs.tolist()):
        raise ClockworkError(f"model {version}: probe answer {probs!r} is not {len(probe)} probabilities in [0, 1]")
    served = ServingModel(
        version=version,
        model=model,
        metadata=metadata,
        onnx_sha256=metadata["onnx_sha256"],
        loaded_at=utc_now(),
        width=probe.shape[1],
        threshold=serving_threshold(paths.settings.deployment.threshold, metadata),
    )
    row_probe = served.row
    row_probe[0, :] = probe[0]
    single = served.predict_row()
    if abs(single - float(probs[0])) > 1e-6:
        raise ClockworkError(f"model {version}: one-row answer {single} differs from the batch answer {probs[0]}")
    return served


def _files_signature(paths: Paths, version: str) -> tuple:
    """What changes when a version's files are written: names, sizes, mtimes (empty if missing)."""
    try:
        folder = paths.model_dir(version)
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)))
    except (OSError, ClockworkError):
        return ()


class ModelHolder:
    """The serving reference, the swap and what /ready reports."""

    def __init__(self, *, paths: Paths, metrics: Metrics, instance_id: str, probe: np.ndarray) -> None:
        self.paths = paths
        self.probe = probe  # a reading every model must answer with a probability in [0, 1] before it is served
        self.metrics = metrics
        self.instance_id = instance_id
        self.current: ServingModel | None = None
        self.pinned: str | None = None
        self.last_failure: dict | None = None
        self.failed_pin: tuple[str, tuple] | None = None  # (version, files signature) of a pin that failed
        self.config_error: str | None = None
        self._lock = asyncio.Lock()
        self.shadow: ServingModel | None = None  # the live shadow, read once per batch by the predictor
        self.shadow_pinned: str | None = None  # deployment.shadow_version as last applied
        self.shadow_failure: dict | None = None  # {time, version, error} when shadow_pinned failed to load
        self._shadow_failed_files: tuple | None = None  # its files' signature then (a change is worth a retry)
        self._shadow_lock = asyncio.Lock()

    # --- what /ready says ------------------------------------------------------------------
    def detail(self) -> str:
        cur = self.current
        parts = [f"serving {cur.version}" if cur else "no model loaded"]
        failed, last = self.failed_pin, self.last_failure
        if failed and last and (cur is None or failed[0] != cur.version):
            parts.append(f"pinned {failed[0]} failed to load: {last['error']}")
        if self.config_error:
            parts.append(f"config.yaml not applied: {self.config_error}")
        if self.shadow is not None:
            parts.append(f"shadow {self.shadow.version}")
        elif self.shadow_failure is not None:
            parts.append(f"shadow {self.shadow_failure['version']} failed to load: {self.shadow_failure['error']}")
        return "; ".join(parts)

    def shadow_info(self) -> dict | None:
        """What /model says of the live shadow: None when config names none."""
        if self.shadow_pinned is None:
            return None
        sh, failure = self.shadow, self.shadow_failure
        return {
            "pinned_version": self.shadow_pinned,
            "model_version": sh.version if sh else None,
            "onnx_sha256": sh.onnx_sha256 if sh else None,
            "loaded_at": sh.loaded_at if sh else None,
            "threshold": sh.threshold if sh else None,
            "error": failure["error"] if failure and sh is None else None,
        }

    # --- the live shadow -------------------------------------------------------------------
    async def set_shadow(self, version: str | None, *, reason: str) -> bool:
        """Make `version` the live shadow (None: no shadow). False when it fails to load: then there is no shadow,
        the failure is logged, counted and reported; serving is never affected."""
        async with self._shadow_lock:
            old = self.shadow
            self.shadow_pinned = version
            if old is not None and old.version == version:
                self.shadow_failure = self._shadow_failed_files = None
                return True
            new: ServingModel | None = None
            if version is not None:
                try:
                    new = await asyncio.to_thread(load_serving_model, self.paths, version, probe=self.probe)
                except (ClockworkError, OSError, ValueError, KeyError) as e:
                    message = f"{type(e).__name__}: {e}"
                    self.shadow_failure = {"time": utc_now(), "version": version, "error": message}
                    self._shadow_failed_files = _files_signature(self.paths, version)
                    self.metrics.shadow_load_failures.inc()
                    log.error(
                        "%s: cannot load shadow %s (%s); no shadow, serving goes on", self.instance_id, version, message
                    )
            self.shadow = new  # one reference: a batch is scored by one shadow or none
            if new is not None:
                self.shadow_failure = self._shadow_failed_files = None
            elif version is None:
                self.shadow_failure = self._shadow_failed_files = None
            self.metrics.set_shadow(
                (new.version, new.onnx_sha256) if new else None, (old.version, old.onnx_sha256) if old else None
            )
            if new is not None or old is not None:
                log.info(
                    "%s: live shadow %s (%s)%s",
                    self.instance_id,
                    f"{new.version} (sha256 {new.onnx_sha256[:12]}, threshold {new.threshold})" if new else "none",
                    reason,
                    f", was {old.version}" if old else "",
                )
            return new is not None or version is None

    def shadow_retry_due(self) -> str | None:
        """The shadow version that failed to load, if its files changed since (worth loading again), else None."""
        failure = self.shadow_failure
        if failure is None or self.shadow is not None:
            return None
        version = failure["version"]
        return version if _files_signature(self.paths, version) != self._shadow_failed_files else None

    # --- loading ---------------------------------------------------------------------------
    async def load(self, version: str, *, reason: str) -> bool:
        """Load `version` beside the current model and swap to it. False (old model kept) on failure."""
        async with self._lock:
            self.pinned = version
            old = self.current
            if old is not None and old.version == version:
                self.failed_pin = None
                return True
            try:
                new = await asyncio.to_thread(load_serving_model, self.paths, version, probe=self.probe)
            except (ClockworkError, OSError, ValueError, KeyError) as e:
                await self._failed(version, old, e, reason)
                return False
            new.predict_route = self.metrics.route("/predict", version)
            new.batch_route = self.metrics.route("/predict/batch", version)
            event = "start" if old is None else "swap"
            # The deployment log row first, then the swap: whoever sees the new version served finds its row.
            await self._log_row(
                event=event,
                version=version,
                previous=old.version if old else None,
                metadata=new.metadata,
                detail=f"{reason}; service commit {git_info()['commit']}",
            )
            self.current = new  # the swap: one reference, read once per request
            self.failed_pin = None
            self.metrics.set_serving(version, new.onnx_sha256, (old.version, old.onnx_sha256) if old else None)
            if old is not None:
                self.metrics.swaps.inc()
            log.info(
                "%s: serving model %s (sha256 %s, data %s)%s",
                self.instance_id,
                version,
                new.onnx_sha256[:12],
                new.metadata.get("data_version"),
                f", was {old.version}" if old else "",
            )
            return True

    async def _failed(self, version: str, old: ServingModel | None, error: Exception, reason: str) -> None:
        message = f"{type(error).__name__}: {error}"
        self.last_failure = {"time": utc_now(), "version": version, "error": message}
        self.failed_pin = (version, _files_signature(self.paths, version))
        self.metrics.swap_failures.inc()
        log.error(
            "%s: cannot serve model %s (%s); %s",
            self.instance_id,
            version,
            message,
            f"still serving {old.version}" if old else "no model is served",
        )
        metadata = None
        try:
            metadata = Registry(paths=self.paths).metadata(version)
        except (ClockworkError, OSError, ValueError):
            pass
        await self._log_row(
            event="swap_failed",
            version=version,
            previous=old.version if old else None,
            metadata=metadata,
            detail=f"{reason}: {message}",
        )

    async def _log_row(
        self, *, event: str, version: str, previous: str | None, metadata: dict | None, detail: str
    ) -> None:
        try:
            await asyncio.to_thread(
                deploylog.append_event,
                self.paths,
                event=event,
                version=version,
                previous_version=previous,
                metadata=metadata,
                instance_id=self.instance_id,
                detail=detail,
            )
        except OSError as e:  # the log is evidence, but a full disk must not stop serving
            log.error("%s: cannot write %s row to %s: %s", self.instance_id, event, self.paths.deployment_log, e)

    def retry_due(self) -> str | None:
        """The failed pin if its files changed since it failed (worth loading again), else None."""
        if self.failed_pin is None:
            return None
        version, signature = self.failed_pin
        return version if _files_signature(self.paths, version) != signature else None


class ConfigWatcher:
    """Polls config.yaml and swaps the model when the pin changes."""

    def __init__(self, *, settings: Settings, holder: ModelHolder) -> None:
        self.path = Path(settings.config_path)
        self.interval = settings.deployment.reload_interval_s
        self.holder = holder
        self.deployment = settings.deployment.model_dump(exclude=LIVE_KEYS)
        self._last: bytes | None = None

    def prime(self) -> None:
        """Remember the file as the service started with it (only later edits are news)."""
        try:
            self._last = self.path.read_bytes()
        except OSError:
            self._last = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watcher must outlive any single bad poll
                log.exception("%s: config watcher poll failed; will try again", self.holder.instance_id)

    async def check(self) -> None:
        """One poll: apply a changed pin, or retry a failed one whose files changed."""
        try:
            data = self.path.read_bytes()
        except OSError as e:
            data = None
            error = f"{self.path}: cannot read: {e.strerror}"
            if self.holder.config_error != error:
                self.holder.config_error = error
                self.holder.metrics.config_errors.inc()
                log.error("%s: %s; keeping model %s", self.holder.instance_id, error, self._serving())
            return
        if data == self._last:
            retry = self.holder.retry_due()
            if retry is not None:
                await self.holder.load(retry, reason="retry: the version's files changed")
            retry = self.holder.shadow_retry_due()
            if retry is not None:
                await self.holder.set_shadow(retry, reason="retry: the shadow version's files changed")
            return
        self._last = data
        try:
            settings = load_settings(self.path)
        except ConfigError as e:
            self.holder.config_error = str(e)
            self.holder.metrics.config_errors.inc()
            log.error(
                "%s: config.yaml edit not applied: %s; keeping model %s", self.holder.instance_id, e, self._serving()
            )
            current = self.holder.current
            if current is not None:  # the refused edit is a deployment record too (what stays served, and why)
                await self.holder._log_row(
                    event="config_rejected",
                    version=current.version,
                    previous=None,
                    metadata=current.metadata,
                    detail=f"config.yaml edit not applied: {e}",
                )
            return
        self.holder.config_error = None
        changed = {
            k
            for k, v in settings.deployment.model_dump(exclude=LIVE_KEYS).items()
            if self.deployment.get(k) != v
        }
        if changed:
            log.warning(
                "%s: config.yaml changed deployment.%s; only model_version and shadow_version are applied live, "
                "restart for the rest",
                self.holder.instance_id,
                ", deployment.".join(sorted(changed)),
            )
        pin = settings.deployment.model_version
        current = self.holder.current
        if current is not None and current.version == pin:
            self.holder.pinned = pin
            self.holder.failed_pin = None
        else:
            await self.holder.load(pin, reason=f"pin changed in {self.path}")
        shadow = settings.deployment.shadow_version
        if shadow != self.holder.shadow_pinned:
            await self.holder.set_shadow(shadow, reason=f"shadow_version changed in {self.path}")

    def _serving(self) -> str:
        return self.holder.current.version if self.holder.current else "(none)"
