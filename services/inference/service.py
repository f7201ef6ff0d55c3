"""`Service`: everything one inference app holds (settings, the reading schema built from the dataset section
(reading.py), logs, metrics, the model holder, the watcher, the predictor), what its routes ask of it, and its
start and stop.

Start (the app's lifespan): open this instance's prediction and feedback logs (file names from
`Paths.prediction_log/feedback_log(instance_id)`, each held with a flock, see logs.py), load the pinned
version (a failure leaves the service up and not ready, see holder.py) and the live shadow if config names one
(a failure leaves no shadow, the service ready), start the config watcher and the log prober. Stop (after the
server's drain, see __main__.py): cancel both, run a coalesced batch still waiting, close the logs (which
releases their locks). A crash leaves whole lines in the logs (an unfinished last line is ended by the next
start) and nothing else to clean up.

Ready (`readiness`, what /ready answers) means: a checked model is loaded, both logs take appends, and the
service is not draining. A log that failed an append (disk full) makes it not ready; the prober writes a
small file beside it every LOG_PROBE_INTERVAL_S and marks it writable again when that succeeds (so does
any append that succeeds). Log health is in /metrics (`clockwork_inference_log_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from services.inference import schemas
from services.inference.holder import ConfigWatcher, ModelHolder, ServingModel
from services.inference.lineage_worker import LineageWorkers
from services.inference.logs import (
    FeedbackLog,
    PredictionLog,
    RecordLog,
    RequestIds,
    UtcClock,
    check_instance_id,
    default_instance_id,
)
from services.inference.metrics import NO_MODEL, Metrics
from services.inference.predictor import Predictor
from services.inference.reading import ReadingSchema
from services.inference.schemas import BadRequest
from shared.config import Settings
from shared.paths import Paths

log = logging.getLogger(__name__)

LOG_PROBE_INTERVAL_S = 0.5  # how often a log that failed is probed for space again


class _LogCollector:
    """/metrics families of the logs' health, read from the RecordLogs when scraped (nothing per request)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def describe(self):
        return []

    def collect(self):
        failures = CounterMetricFamily(
            "clockwork_inference_log_write_failures",
            "Appends to a log that failed (disk full, I/O error); each was undone, nothing of it stays",
            labels=["log"],
        )
        refused = CounterMetricFamily(
            "clockwork_inference_log_refused_records",
            "Records a log could not take: their requests were answered 503, none was logged",
            labels=["log"],
        )
        writable = GaugeMetricFamily(
            "clockwork_inference_log_writable",
            "1 while the log takes appends; 0 from a failed append until an append or a probe succeeds",
            labels=["log"],
        )
        for f in self.svc._logs:
            kind = [f.what.split()[0]]
            failures.add_metric(kind, f.failures)
            refused.add_metric(kind, f.refused)
            writable.add_metric(kind, 0 if f.error else 1)
        yield failures
        yield refused
        yield writable


class Service:
    """One app instance's state; nothing is opened or loaded until `start()`."""

    predictions: PredictionLog  # opened by start()
    feedback: FeedbackLog  # likewise

    def __init__(self, settings: Settings, *, instance_id: str | None = None) -> None:
        self.settings = settings
        self.paths = Paths.from_settings(settings)
        self.instance_id = check_instance_id(instance_id) if instance_id else default_instance_id()
        dep = settings.deployment
        self.max_body = dep.max_body_bytes
        self.reading = ReadingSchema.build(settings.dataset)  # the request model and encoder, from the dataset
        self.Reading = self.reading.model
        self.Batch = schemas.batch_model(self.Reading, dep.max_batch_rows)
        self.FeedbackBatch = schemas.feedback_batch_model(dep.max_feedback_rows)
        self.metrics = Metrics(self.instance_id)
        self.holder = ModelHolder(
            paths=self.paths, metrics=self.metrics, instance_id=self.instance_id, probe=self.reading.probe()
        )
        self.watcher = ConfigWatcher(settings=settings, holder=self.holder)
        self.clock = UtcClock()
        self.predictor = Predictor(
            ids=RequestIds(),
            clock=self.clock,
            metrics=self.metrics,
            coalesce=dep.coalesce.enabled,
            max_rows=dep.coalesce.max_rows,
            max_open_iterations=dep.coalesce.max_open_iterations,
            shadow=lambda: self.holder.shadow,
        )
        self.lineage = LineageWorkers(settings, count=settings.security.lineage_concurrency)  # GET /lineage/{id}
        self._logs: list[RecordLog] = []
        self._tasks: list[asyncio.Task] = []
        self.draining = False  # set when the server starts its drain (SIGTERM): /ready answers 503
        self.metrics.registry.register(_LogCollector(self))

    @property
    def prediction_log_path(self) -> Path:
        return self.paths.prediction_log(self.instance_id)

    @property
    def feedback_log_path(self) -> Path:
        return self.paths.feedback_log(self.instance_id)

    # --- what the routes ask -------------------------------------------------------------------
    def model(self) -> ServingModel:
        """The serving model, read once (a request is answered by exactly this version); 503 if none."""
        current = self.holder.current
        if current is None:
            raise BadRequest(503, f"no model is loaded: {self.holder.detail()}")
        return current

    def readiness(self) -> tuple[bool, str]:
        """(ready, detail) for /ready: a checked model is loaded, every log takes appends, not draining."""
        problems = [f.error for f in self._logs if f.error]
        if self.draining:
            problems.append("draining: the service is stopping")
        return self.holder.current is not None and not problems, "; ".join([self.holder.detail(), *problems])

    def drain(self) -> None:
        """The server stopped accepting connections and is answering what is in flight."""
        self.draining = True

    def count(self, route: str, status: int) -> None:
        """One answer of `route` (routing.DirectRoute calls it), under the version serving now."""
        current = self.holder.current
        self.metrics.count(route, status, current.version if current else NO_MODEL)

    # --- lifespan ------------------------------------------------------------------------------
    async def start(self) -> None:
        size, daily = self.settings.logs.rotate_bytes, self.settings.logs.rotate_daily
        self.predictions = PredictionLog(self.prediction_log_path, rotate_bytes=size, rotate_daily=daily)
        self.predictor.log = self.predictions
        self.predictor.loop = asyncio.get_running_loop()
        self.feedback = FeedbackLog(self.feedback_log_path, rotate_bytes=size, rotate_daily=daily)
        self._logs = [self.predictions, self.feedback]
        self.watcher.prime()
        log.info(
            "instance %s: prediction log %s, feedback log %s",
            self.instance_id,
            self.prediction_log_path,
            self.feedback_log_path,
        )
        await self.holder.load(self.settings.deployment.model_version, reason="start")
        if self.settings.deployment.shadow_version is not None:  # after the pin: a shadow never delays serving more
            await self.holder.set_shadow(self.settings.deployment.shadow_version, reason="start")
        self._tasks = [
            asyncio.create_task(self.watcher.run(), name=f"config-watcher-{self.instance_id}"),
            asyncio.create_task(self.probe_logs(), name=f"log-prober-{self.instance_id}"),
        ]

    async def probe_logs(self, interval: float = LOG_PROBE_INTERVAL_S) -> None:
        """Forever: a log that failed is writable again once a probe write beside it succeeds."""
        while True:
            await asyncio.sleep(interval)
            for f in self._logs:
                try:
                    if f.error is not None and await asyncio.to_thread(f.probe):
                        f.recovered("a probe write succeeded")
                except Exception:  # noqa: BLE001 - the prober must outlive any single bad probe
                    log.exception("%s: probing %s failed; will try again", self.instance_id, f.path)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.predictor.flush()  # a batch still waiting (none after a drain) is answered and logged
        await self.lineage.close()
        for f in self._logs:
            f.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object):
        await self.start()
        try:
            yield
        finally:
            await self.stop()
