"""The retrain queue on Redis: reliable delivery, job status, dead letters, leases.

Keys (all from config through shared.paths.RedisKeys):
  retrain_queue      list; producers LPUSH JSON messages (shared.schemas.RetrainMessage)
  processing_queue   list; a worker BLMOVEs a message here (atomically) and removes it when finished
  dead_letter_queue  list of JSON {raw, reason, time, worker}: malformed messages, never dropped silently; a raw
                     message over redis.max_message_bytes is kept as its first max_message_bytes bytes, with
                     raw_bytes (its size), raw_sha256 and truncated: true
  job(id)            hash: status queued|running|done|failed, version, reason, times, attempts, worker, the gate's
                     decision (gate_decision, recorded before it is acted on), requeued_at / requeues
  job_lock(id)       the lease: SET NX PX lease_s by the worker running the job, renewed by a heartbeat

At-least-once: a message stays in the processing list until its worker finishes. An entry there whose
lease has gone (its worker died) is moved back to the queue (`requeue_orphans`) and its job shows queued
again. Running a job twice is harmless because the worker checks the job status, the lease and the registry
before training. `requeue_orphans` never raises on a malformed entry (it is requeued, then dead-lettered).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from shared.errors import MessageError, NotFoundError
from shared.paths import RedisKeys
from shared.schemas import DEFAULT_MAX_MESSAGE_BYTES, RetrainMessage, parse_retrain_message, utc_now

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATUSES = (QUEUED, RUNNING, DONE, FAILED)

# Move an entry from processing back to the queue only if it is still there (two scanners never both move it);
# in the same step, its job hash (KEYS[3], when the entry has a valid id) goes from running back to queued.
_REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  if #KEYS >= 3 and redis.call('HGET', KEYS[3], 'status') == 'running' then
    local worker = redis.call('HGET', KEYS[3], 'worker') or 'its worker'
    redis.call('HSET', KEYS[3], 'status', 'queued', 'requeued_at', ARGV[2],
               'requeued_reason', 'the lease of ' .. worker .. ' expired (worker dead or cut off): taken again')
    redis.call('HINCRBY', KEYS[3], 'requeues', 1)
  end
  return 1
end
return 0
"""
# Renew / release a lease only if we still own it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def message_id_of(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> str | None:
    """The id of a raw message if it is a valid one, else None."""
    try:
        return parse_retrain_message(raw, max_bytes=max_bytes).id
    except MessageError:
        return None


class RetrainQueue:
    """Queue operations on one Redis connection. `redis` is a redis.Redis client (bytes or str responses)."""

    def __init__(
        self, *, redis, keys: RedisKeys, lease_s: float, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.redis = redis
        self.keys = keys
        self.lease_ms = max(1, int(lease_s * 1000))
        self._requeue = redis.register_script(_REQUEUE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @classmethod
    def from_settings(cls, settings, *, redis) -> RetrainQueue:
        return cls(
            redis=redis,
            keys=RedisKeys.from_settings(settings),
            lease_s=settings.redis.lease_s,
            max_message_bytes=settings.redis.max_message_bytes,
        )

    def parse(self, raw: bytes | str) -> RetrainMessage:
        """A taken message, validated within this queue's size limit (MessageError: dead-letter it)."""
        return parse_retrain_message(raw, max_bytes=self.max_message_bytes)

    # --- producers ------------------------------------------------------------------------
    def push(self, message: RetrainMessage, *, also_set: dict[str, str] | None = None) -> None:
        """Record the job as queued and push the message (validated: it went through the schema).

        `also_set` (key -> value) is written in the same MULTI/EXEC transaction: a producer's own record of
        what it sent (the monitor's cooldown) exists exactly when the message does.
        """
        line = message.to_line()
        self.parse(line)
        pipe = self.redis.pipeline(transaction=True)
        for key, value in (also_set or {}).items():
            pipe.set(key, value)
        pipe.hset(
            self.keys.job(message.id),
            mapping={
                "status": QUEUED,
                "message_id": message.id,
                "requested_reason": message.reason,
                "queued_at": utc_now(),
            },
        )
        pipe.lpush(self.keys.retrain_queue, line)
        pipe.execute()
        log.info("pushed retrain message %s (%s) to %s", message.id, message.reason, self.keys.retrain_queue)

    # --- consumers ------------------------------------------------------------------------
    def take(self, *, timeout_s: float) -> bytes | str | None:
        """Oldest message, moved atomically into the processing list; None after `timeout_s`."""
        return self.redis.blmove(self.keys.retrain_queue, self.keys.processing_queue, timeout_s, "RIGHT", "LEFT")

    def ack(self, raw: bytes | str) -> None:
        """The message is finished with (done, failed or dead-lettered): remove it from processing."""
        self.redis.lrem(self.keys.processing_queue, 1, raw)

    def dead_letter(self, raw: bytes | str, *, reason: str, worker: str = "") -> None:
        """Move a message from processing to the dead-letter list with the reason (an oversized one truncated)."""
        data = raw.encode("utf-8", errors="surrogatepass") if isinstance(raw, str) else bytes(raw)
        entry: dict[str, Any] = {"raw": _text(raw), "reason": reason, "time": utc_now(), "worker": worker}
        if len(data) > self.max_message_bytes:
            entry.update(
                raw=data[: self.max_message_bytes].decode("utf-8", errors="replace"),
                raw_bytes=len(data),
                raw_sha256=hashlib.sha256(data).hexdigest(),
                truncated=True,
            )
        record = json.dumps(entry, sort_keys=True)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.keys.dead_letter_queue, record)
        pipe.lrem(self.keys.processing_queue, 1, raw)
        pipe.execute()
        log.warning("dead-lettered a message to %s: %s", self.keys.dead_letter_queue, reason)

    def dead_letters(self) -> list[dict]:
        return [json.loads(_text(x)) for x in self.redis.lrange(self.keys.dead_letter_queue, 0, -1)]

    # --- leases ---------------------------------------------------------------------------
    def acquire(self, message_id: str, *, owner: str) -> bool:
        return bool(self.redis.set(self.keys.job_lock(message_id), owner, nx=True, px=self.lease_ms))

    def renew(self, message_id: str, *, owner: str) -> bool:
        return bool(self._renew(keys=[self.keys.job_lock(message_id)], args=[owner, self.lease_ms]))

    def release(self, message_id: str, *, owner: str) -> None:
        self._release(keys=[self.keys.job_lock(message_id)], args=[owner])

    def lease_holder(self, message_id: str) -> str | None:
        value = self.redis.get(self.keys.job_lock(message_id))
        return None if value is None else _text(value)

    def requeue_orphans(self, *, seen: dict[str, float], grace_s: float) -> int:
        """Move processing entries without a lease back to the queue once orphaned for `grace_s`.

        `seen` (kept by the caller between scans) remembers since when each entry had no lease, so an
        entry a worker has just taken, and not yet leased, is left alone.
        """
        now = time.monotonic()
        moved = 0
        current = set()
        for raw in self.redis.lrange(self.keys.processing_queue, 0, -1):
            key = _text(raw)
            current.add(key)
            mid = message_id_of(raw, max_bytes=self.max_message_bytes)
            if mid is not None and self.redis.exists(self.keys.job_lock(mid)):
                seen.pop(key, None)
                continue
            first = seen.setdefault(key, now)
            if now - first >= grace_s:
                keys = [self.keys.processing_queue, self.keys.retrain_queue]
                if mid is not None:
                    keys.append(self.keys.job(mid))
                if self._requeue(keys=keys, args=[raw, utc_now()]):
                    moved += 1
                    log.warning("requeued message %s: its worker's lease expired", mid or "(malformed)")
                seen.pop(key, None)
        for key in list(seen):
            if key not in current:
                del seen[key]
        return moved

    # --- job status -----------------------------------------------------------------------
    def set_job(self, message_id: str, **fields: Any) -> None:
        mapping = {k: ("" if v is None else str(v)) for k, v in fields.items()}
        self.redis.hset(self.keys.job(message_id), mapping={"message_id": message_id, **mapping})

    def bump_attempts(self, message_id: str) -> int:
        return int(self.redis.hincrby(self.keys.job(message_id), "attempts", 1))

    def job(self, message_id: str) -> dict[str, str]:
        """A job's status hash ({} if unknown)."""
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.keys.job(message_id)).items()}

    def require_job(self, message_id: str) -> dict[str, str]:
        found = self.job(message_id)
        if not found:
            raise NotFoundError(f"No such retrain job: {message_id} (Redis key {self.keys.job(message_id)})")
        return found

    def job_view(self, message_id: str) -> dict[str, str]:
        """A job's hash plus `lease` (its holder, or "none") and, when the two disagree, a `note` saying why.

        A job that says running without a lease has lost its worker: the next worker's orphan scan requeues it.
        """
        view = self.require_job(message_id)
        holder = self.lease_holder(message_id)
        view["lease"] = holder or "none"
        if view.get("status") == RUNNING and holder is None:
            view["note"] = (
                f"lease gone: worker {view.get('worker') or '?'} died or lost Redis (last heartbeat "
                f"{view.get('heartbeat_at') or '?'}); a running worker requeues the job within "
                f"{self.lease_ms / 1000:g} s or so"
            )
        elif view.get("status") == QUEUED and view.get("requeued_at"):
            view["note"] = f"requeued at {view['requeued_at']}: {view.get('requeued_reason', '')}"
        return view
