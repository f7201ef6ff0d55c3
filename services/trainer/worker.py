"""The retrain worker: takes messages from Redis and runs them as jobs, one at a time.

    take (BLMOVE queue -> processing) -> validate (malformed, oversized, unsafe: dead letter, keep going)
    -> already done? / lease held by another worker? -> lease (SET NX PX) + heartbeat
    -> config.yaml read again (a broken file fails this job only) -> services.trainer.retrain.run_retrain
    -> status done (RetrainResult.job_fields) or failed (reason) -> ack

Nothing in a message stops the worker: any exception while handling one fails that job with the reason
(or dead-letters the message when even that cannot be written) and the worker takes the next. Only Redis
being unreachable leaves a message in the processing list, to be taken again once its lease is gone.
A job started more than redis.max_attempts times (its workers died on it each time) is failed, not run again.

Each job runs on config.yaml as it is when the job starts (hyperparameters, paths, gate) and records the git
commit as it is then; the Redis connection, queue names and lease stay those the worker started with (a log
line says so when the file's redis section changes). At start the worker removes stale registry temp
folders and repairs model_metadata.log. Orphans (messages in the processing list whose worker died and whose
lease expired) are moved back to the queue at start and on every loop. SIGTERM (request_stop) lets the
current job finish, then exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis as redis_lib

from services.trainer import retrain
from shared.config import Settings, load_settings, redact_url
from shared.errors import ClockworkError, MessageError
from shared.gitinfo import refresh_git_info
from shared.paths import Paths
from shared.queue import DONE, FAILED, RUNNING, RetrainQueue
from shared.registry import Registry
from shared.schemas import RetrainMessage, utc_now

log = logging.getLogger(__name__)

# Redis errors that mean "cannot reach Redis now" (the message is retried), unlike a refused command.
TRANSIENT = (redis_lib.ConnectionError, redis_lib.TimeoutError)


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
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings  # as started: the Redis connection, queue names and lease come from it
        self.reload_settings = reload_settings or (lambda: load_settings(settings.config_path))
        self.paths = Paths.from_settings(settings)
        self.registry = Registry(paths=self.paths)
        self._redis_warned = settings.redis
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
        try:
            self.registry.remove_stale_temp()
            self.registry.repair_metadata_log()
        except OSError as e:
            log.error("worker %s: registry housekeeping in %s failed: %s", self.id, self.registry.dir, e)
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
            except TRANSIENT as e:
                # The message stays in the processing list; once its lease is gone it is taken again.
                log.warning("worker %s: Redis failed while handling a message (%s); it will be retried", self.id, e)
            except Exception:  # noqa: BLE001 - e.g. Redis refusing the dead-letter write; the loop goes on
                log.exception("worker %s: a message could not be settled; it stays in the processing list", self.id)
        log.info("worker %s: stopped after %d message(s)", self.id, self.handled)
        return self.handled

    def handle(self, raw: bytes | str) -> None:
        """One taken message, whatever it holds: done, failed (reason kept) or dead-lettered, then acked."""
        try:
            message = self.queue.parse(raw)
        except MessageError as e:
            self.queue.dead_letter(raw, reason=str(e), worker=self.id)
            return
        except Exception as e:  # noqa: BLE001 - the parser's contract is MessageError only; a slip must not kill us
            log.exception("worker %s: parsing a message raised", self.id)
            self.queue.dead_letter(raw, reason=f"unparseable: {type(e).__name__}: {e}", worker=self.id)
            return
        try:
            self._handle_message(raw, message)
        except TRANSIENT:
            raise
        except Exception as e:  # noqa: BLE001 - fail this job, keep the worker
            log.exception("job %s: handling the message raised", message.id)
            self._give_up(raw, message, f"{type(e).__name__}: {e}")

    def _give_up(self, raw: bytes | str, message: RetrainMessage, reason: str) -> None:
        """Fail the job and ack its message; if the job hash cannot be written, dead-letter the message."""
        try:
            self._failed(message, reason)
            self.queue.ack(raw)
        except TRANSIENT:
            raise
        except redis_lib.RedisError as e:
            self.queue.dead_letter(raw, reason=f"{reason}; job status not writable: {e}", worker=self.id)

    def _handle_message(self, raw: bytes | str, message: RetrainMessage) -> None:
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
            self.run_job(message, recorded=job)
            self.queue.ack(raw)  # not on an exception: a transient one leaves it for a retry, others fail the job
        finally:
            self.queue.release(message.id, owner=self.id)

    def job_settings(self) -> Settings:
        """config.yaml as it is now (ConfigError fails the job); says so when its redis section no longer matches."""
        settings = self.reload_settings()
        if settings.redis != self.settings.redis and settings.redis != self._redis_warned:
            changed = [
                k
                for k in type(settings.redis).model_fields
                if getattr(settings.redis, k) != getattr(self.settings.redis, k)
            ]
            log.warning(
                "worker %s: %s changes redis (%s); this worker keeps its connection %s and queue %s until restarted",
                self.id,
                settings.config_path,
                ", ".join(f"redis.{k}" for k in changed),
                redact_url(self.settings.redis.url),
                self.queue.keys.retrain_queue,
            )
        self._redis_warned = settings.redis
        refresh_git_info()
        return settings

    def run_job(self, message: RetrainMessage, *, recorded: dict[str, str] | None = None) -> None:
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
        if attempts > self.settings.redis.max_attempts:
            self._failed(message, f"started {attempts} times (its workers died or were cut off each time): given up")
            return
        heartbeat = Heartbeat(self.queue, message.id, owner=self.id)
        heartbeat.start()
        t0 = time.perf_counter()
        try:
            settings = self.job_settings()
            result = retrain.run_retrain(
                settings,
                message,
                registry=Registry(paths=Paths.from_settings(settings)),
                recorded=recorded or {},
                record=lambda **fields: self.queue.set_job(message.id, **fields),
            )
        except ClockworkError as e:
            self._failed(message, str(e))
        except TRANSIENT:
            raise
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
