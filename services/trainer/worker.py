"""The retrain worker: takes messages from Redis and runs them as jobs, one at a time.

    take (BLMOVE queue -> processing) -> validate (malformed: dead letter, keep going)
    -> already done? / lease held by another worker? -> lease (SET NX PX) + heartbeat
    -> services.trainer.retrain.run_retrain -> status done (RetrainResult.job_fields) or failed (reason) -> ack

Orphans (messages in the processing list whose worker died and whose lease expired) are moved back to
the queue at start and on every loop. SIGTERM (request_stop) lets the current job finish, then exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis as redis_lib

from services.trainer import retrain
from shared.config import Settings
from shared.errors import ClockworkError, MessageError
from shared.paths import Paths
from shared.queue import DONE, FAILED, RUNNING, RetrainQueue
from shared.registry import Registry
from shared.schemas import RetrainMessage, utc_now

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Renews a job's lease every lease/3 seconds while the job runs."""

    def __init__(self, queue: RetrainQueue, message_id: str, *, owner: str) -> None:
        super().__init__(name=f"heartbeat-{message_id}", daemon=True)
        self.queue, self.message_id, self.owner = queue, message_id, owner
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = max(self.queue.lease_ms / 3000.0, 0.05)
        while not self.stopped.wait(interval):
            try:
                if not self.queue.renew(self.message_id, owner=self.owner):
                    log.error(
                        "job %s: lease lost (held by %s)", self.message_id, self.queue.lease_holder(self.message_id)
                    )
                self.queue.set_job(self.message_id, heartbeat_at=utc_now())
            except redis_lib.RedisError as e:
                log.warning("job %s: heartbeat failed: %s", self.message_id, e)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        redis,
        max_jobs: int | None = None,
        poll_s: float = 1.0,
        worker_id: str | None = None,
        orphan_grace_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.paths = Paths.from_settings(settings)
        self.registry = Registry(paths=self.paths)
        self.queue = RetrainQueue.from_settings(settings, redis=redis)
        self.max_jobs = max_jobs
        self.poll_s = poll_s
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.orphan_grace_s = orphan_grace_s if orphan_grace_s is not None else min(settings.redis.lease_s, 5.0)
        self._orphans_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self.handled = 0

    def request_stop(self) -> None:
        """Finish the current job, then leave the loop (SIGTERM)."""
        log.info("worker %s: stop requested; finishing the current job", self.id)
        self._stop.set()

    def run(self) -> int:
        """Loop until stopped or `max_jobs` messages were handled; returns how many were handled."""
        log.info("worker %s: waiting on %s (max_jobs=%s)", self.id, self.queue.keys.retrain_queue, self.max_jobs)
        self.registry.remove_stale_temp()
        backoff = self.poll_s
        while not self._stop.is_set() and (self.max_jobs is None or self.handled < self.max_jobs):
            try:
                self.queue.requeue_orphans(seen=self._orphans_seen, grace_s=self.orphan_grace_s)
                raw = self.queue.take(timeout_s=self.poll_s)
                backoff = self.poll_s
            except redis_lib.RedisError as e:
                log.warning("worker %s: Redis unavailable (%s); retrying in %.1fs", self.id, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if raw is None:
                continue
            self.handled += 1
            try:
                self.handle(raw)
            except redis_lib.RedisError as e:
                # The message stays in the processing list; once its lease is gone it is taken again.
                log.warning("worker %s: Redis failed while handling a message (%s); it will be retried", self.id, e)
        log.info("worker %s: stopped after %d message(s)", self.id, self.handled)
        return self.handled

    def handle(self, raw: bytes | str) -> None:
        try:
            message = self.queue.parse(raw)
        except MessageError as e:
            self.queue.dead_letter(raw, reason=str(e), worker=self.id)
            return
        job = self.queue.job(message.id)
        if job.get("status") == DONE:
            log.info("job %s: already done (%s); dropping the repeat", message.id, job.get("version"))
            self.queue.ack(raw)
            return
        if not self.queue.acquire(message.id, owner=self.id):
            log.info("job %s: leased by %s; leaving it to that worker", message.id, self.queue.lease_holder(message.id))
            self.queue.ack(raw)
            return
        try:
            self.run_job(message)
        finally:
            self.queue.ack(raw)
            self.queue.release(message.id, owner=self.id)

    def run_job(self, message: RetrainMessage) -> None:
        attempts = self.queue.bump_attempts(message.id)
        self.queue.set_job(
            message.id,
            status=RUNNING,
            worker=self.id,
            started_at=utc_now(),
            heartbeat_at=utc_now(),
            requested_reason=message.reason,
            message=message.to_line(),
            reason="",
        )
        log.info("job %s: running (attempt %d, reason %r)", message.id, attempts, message.reason)
        heartbeat = Heartbeat(self.queue, message.id, owner=self.id)
        heartbeat.start()
        t0 = time.perf_counter()
        try:
            result = retrain.run_retrain(self.settings, message, registry=self.registry)
        except ClockworkError as e:
            self._failed(message, str(e))
        except Exception as e:  # noqa: BLE001 - a job's bug must not kill the worker; the reason is kept
            log.exception("job %s: unexpected error", message.id)
            self._failed(message, f"{type(e).__name__}: {e}")
        else:
            self.queue.set_job(
                message.id,
                status=DONE,
                **result.job_fields(),
                finished_at=utc_now(),
                seconds=f"{time.perf_counter() - t0:.2f}",
            )
            log.info(
                "job %s: done -> %s (%s, gate %s, promoted %s)",
                message.id,
                result.version,
                "new" if result.created else "existing",
                result.gate_decision,
                result.promoted,
            )
        finally:
            heartbeat.stop()

    def _failed(self, message: RetrainMessage, reason: str) -> None:
        log.error("job %s: failed: %s", message.id, reason)
        self.queue.set_job(message.id, status=FAILED, reason=reason, finished_at=utc_now())
