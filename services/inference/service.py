"""`Service`: everything one inference app holds (settings, logs, metrics, the model holder, the watcher,
the predictor), what its routes ask of it, and its start and stop.

Start (the app's lifespan): open this instance's prediction and feedback logs (file names from
`Paths.prediction_log/feedback_log(instance_id)`, each held with a flock, see logs.py), load the pinned
version (a failure leaves the service up and not ready, see holder.py), start the config watcher. Stop:
cancel the watcher, close the logs (which releases their locks). A crash leaves whole lines in the logs
(an unfinished last line is ended by the next start) and nothing else to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from services.inference import schemas
from services.inference.holder import ConfigWatcher, ModelHolder, ServingModel
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
from services.inference.schemas import BadRequest
from shared.config import Settings
from shared.paths import Paths

log = logging.getLogger(__name__)


class Service:
    """One app instance's state; nothing is opened or loaded until `start()`."""

    predictions: PredictionLog  # opened by start()
    feedback: FeedbackLog  # likewise

    def __init__(self, settings: Settings, *, instance_id: str | None = None) -> None:
        self.settings = settings
        self.paths = Paths.from_settings(settings)
        self.instance_id = check_instance_id(instance_id) if instance_id else default_instance_id()
        dep = settings.deployment
        self.threshold = dep.threshold
        self.max_body = dep.max_body_bytes
        self.Reading = schemas.reading_model(dep.input_ranges)
        self.Batch = schemas.batch_model(self.Reading, dep.max_batch_rows)
        self.metrics = Metrics()
        self.holder = ModelHolder(paths=self.paths, metrics=self.metrics, instance_id=self.instance_id)
        self.watcher = ConfigWatcher(settings=settings, holder=self.holder)
        self.clock = UtcClock()
        self.predictor = Predictor(
            threshold=self.threshold,
            ids=RequestIds(),
            clock=self.clock,
            metrics=self.metrics,
            coalesce=dep.coalesce.enabled,
            max_rows=dep.coalesce.max_rows,
            max_open_iterations=dep.coalesce.max_open_iterations,
        )
        self._logs: list[RecordLog] = []
        self._task: asyncio.Task | None = None

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

    def count(self, route: str, status: int) -> None:
        """One answer of `route` (routing.DirectRoute calls it), under the version serving now."""
        current = self.holder.current
        self.metrics.count(route, status, current.version if current else NO_MODEL)

    # --- lifespan ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.predictions = self.predictor.log = PredictionLog(self.prediction_log_path)
        self.predictor.loop = asyncio.get_running_loop()
        self.feedback = FeedbackLog(self.feedback_log_path)
        self._logs = [self.predictions, self.feedback]
        self.watcher.prime()
        log.info(
            "instance %s: prediction log %s, feedback log %s",
            self.instance_id,
            self.prediction_log_path,
            self.feedback_log_path,
        )
        await self.holder.load(self.settings.deployment.model_version, reason="start")
        self._task = asyncio.create_task(self.watcher.run(), name=f"config-watcher-{self.instance_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for f in self._logs:
            f.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object):
        await self.start()
        try:
            yield
        finally:
            await self.stop()
