"""Single-row predictions under load: coalesced into one ONNX call and one log write.

Under concurrent load, uvicorn parses several /predict requests per event-loop iteration. Each
submits its reading and awaits a future. The batch stays open while requests keep arriving, one loop
iteration at a time (`call_soon`, no timer), for at most `max_open_iterations` iterations or `max_rows`
rows; a lone request waits one extra iteration (microseconds). Then `flush` runs the rows of each
model as one ONNX call (a forest call costs ~15 us of fixed overhead, ~1 us per extra row, and
several times more when its code and nodes have fallen out of cache between calls), writes all their
prediction records with one `os.write` (every line whole), and only then resolves the futures: each
record is written before its response is sent.

`deployment.coalesce` in config.yaml sets the limits; `enabled: false` turns coalescing off (each
request runs its own one-row call inline), for comparison in the benchmark.

Rows are grouped by the ServingModel each request read from the holder, so a swap in between never
mixes versions: every response and every record names the model that computed it.

A batch whose log write fails (disk full) wrote nothing (logs.py undoes a partial write): every waiter of
it gets its own `LogUnavailable` (503 naming the cause), none a result. A batch being assembled when the
service stops runs on the next loop iterations like any other (the drain waits for it; `flush` at stop).

The live shadow (deployment.shadow_version, loaded by holder.py): once a batch's served probabilities are
computed, the same rows go through the shadow in one more ONNX call, inline, and its probability and label (at
its own threshold) are written in the same log lines (`shadow`), never in a response. A shadow that raises or
answers something other than one finite probability per row is left out of that batch's lines, counted
(`clockwork_shadow_errors_total`) and logged (at most once per SHADOW_LOG_INTERVAL_S); the request never sees it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from services.inference.holder import ServingModel
from services.inference.logs import LogUnavailable, PredictionLog, RequestIds, Shadowed, UtcClock
from services.inference.metrics import Metrics

log = logging.getLogger(__name__)

SHADOW_LOG_INTERVAL_S = 60.0  # a failing shadow is logged at most this often (every failure is counted)


def _no_shadow() -> ServingModel | None:
    return None


class Predictor:
    log: PredictionLog  # set when the service starts
    loop: asyncio.AbstractEventLoop  # likewise

    def __init__(
        self,
        *,
        ids: RequestIds,
        clock: UtcClock,
        metrics: Metrics,
        coalesce: bool = True,
        max_rows: int = 256,
        max_open_iterations: int = 3,
        shadow: Callable[[], ServingModel | None] = _no_shadow,
    ) -> None:
        self.shadow = shadow  # the live shadow now (holder.ModelHolder.shadow), read once per batch
        self._shadow_logged: dict[tuple[str, str], float] = {}  # (version, error type) -> when last logged
        self.coalesce = coalesce  # False: every request runs its own one-row call at once (for comparison)
        self.max_rows = max_rows  # a batch this large runs at once
        self.max_open_iterations = max_open_iterations  # loop iterations a batch stays open while it grows
        self.ids = ids
        self.clock = clock
        self.metrics = metrics
        self.pending: list[tuple[ServingModel, Sequence[float], dict, asyncio.Future]] = []
        self.generation = 0  # counts flushes, so that a stale tick never cuts a newer batch short

    def submit(self, model: ServingModel, row: Sequence[float], inputs: dict) -> asyncio.Future:
        """Queue one reading (`row`: the model's input, the dataset's features in order, a categorical as its
        level's index; `inputs` as logged, keyed by feature name); resolves to (request_id, p, label)."""
        loop = self.loop
        fut = loop.create_future()
        if not self.coalesce:
            self._run(model, [(model, row, inputs, fut)])  # resolved now: awaiting it does not suspend
            return fut
        pending = self.pending
        if not pending:
            loop.call_soon(self._tick, self.generation, 0, 0)
        pending.append((model, row, inputs, fut))
        if len(pending) >= self.max_rows:
            self.flush()
        return fut

    def _tick(self, generation: int, seen: int, iterations: int) -> None:
        """Once per loop iteration: keep the batch open while it grows, else run it."""
        if generation != self.generation:
            return  # that batch has run already
        size = len(self.pending)
        if size > seen and iterations < self.max_open_iterations:
            self.loop.call_soon(self._tick, generation, size, iterations + 1)
        else:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.generation += 1
        if not pending:
            return
        first = pending[0][0]
        if all(item[0] is first for item in pending):
            self._run(first, pending)
            return
        groups: dict[int, list] = {}
        for item in pending:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            self._run(items[0][0], items)

    def record(
        self, model: ServingModel, inputs: list[dict], probabilities: list[float], *, route, rows
    ) -> list[tuple]:
        """Label, name and log predictions (one write for all, with the live shadow's answers for `rows`: the
        encoded readings, float32 [N, F], or one reading's sequence), count them; [(request_id, p, label)]."""
        threshold, next_id = model.threshold, self.ids.next
        results, positives = [], 0
        for p in probabilities:
            label = 1 if p >= threshold else 0
            positives += label
            results.append((next_id(), p, label))
        shadowed = self.shadow_scores(rows, len(results))
        self.log.append(self.clock.now(), model.version, threshold, inputs, results, shadowed)
        route.predicted[1] += positives
        route.predicted[0] += len(results) - positives
        return results

    def shadow_scores(self, rows: np.ndarray | Sequence[float], count: int) -> Shadowed | None:
        """The live shadow's (version, threshold, [(probability, label)]) for `count` rows; None without a shadow
        or when it fails (counted and logged, never raised)."""
        shadow = self.shadow()
        if shadow is None:
            return None
        try:
            if isinstance(rows, np.ndarray):
                answer = shadow.predict_many(rows)
                if answer.shape != (count,) or not np.isfinite(answer).all():
                    raise ValueError(f"answered {answer.shape} {answer[:4]!r}, not {count} finite probabilities")
                probabilities = answer.tolist()
            else:
                shadow.row[0] = rows
                p = shadow.predict_row()
                if not math.isfinite(p):
                    raise ValueError(f"answered {p!r}, not a finite probability")
                probabilities = [p]
        except Exception as e:  # noqa: BLE001 - a shadow never fails a request, whatever it raises
            self._shadow_failed(shadow, e)
            return None
        threshold = shadow.threshold
        self.metrics.shadow_rows += count
        return shadow.version, threshold, [(p, 1 if p >= threshold else 0) for p in probabilities]

    def _shadow_failed(self, shadow: ServingModel, error: Exception) -> None:
        """Count every failure; log the first of a kind (version, exception type), then once per interval."""
        self.metrics.shadow_errors.inc()
        kind = (shadow.version, type(error).__name__)
        now = time.monotonic()
        if now - self._shadow_logged.get(kind, -math.inf) >= SHADOW_LOG_INTERVAL_S:
            self._shadow_logged[kind] = now
            log.error(
                "shadow %s: %s: %s; its answers are left out of these records (served answers unaffected; every "
                "failure counts in clockwork_shadow_errors_total)",
                shadow.version,
                type(error).__name__,
                error,
            )

    def _run(self, model: ServingModel, items: list) -> None:
        try:
            rows: np.ndarray | Sequence[float]
            if len(items) == 1:
                rows = model.row[0] = items[0][1]
                probabilities = [model.predict_row()]
            else:
                rows = np.array([item[1] for item in items], dtype=np.float32)
                probabilities = model.predict_many(rows).tolist()
            inputs = [item[2] for item in items]
            results = self.record(model, inputs, probabilities, route=model.predict_route, rows=rows)
        except Exception as e:  # noqa: BLE001 - handed to each waiting request: a 503 (log) or a JSON 500 (a bug)
            for item in items:
                if not item[3].done():  # each its own refusal: one exception raised in many tasks would share state
                    item[3].set_exception(LogUnavailable(e.detail) if isinstance(e, LogUnavailable) else e)
            return
        metrics = self.metrics
        metrics.onnx_runs += 1
        metrics.onnx_rows += len(items)
        for item, result in zip(items, results, strict=False):
            if not item[3].done():  # a request whose client went away was cancelled
                item[3].set_result(result)
