"""The retrain trigger: one message per condition, with its evidence.

A condition is the set of checks that fired on the serving model version (e.g. {"drift:air_temperature_k",
"performance:f1"}). A message is sent when checks fire, unless the last trigger was for the same serving
version, less than `monitoring.cooldown_s` ago, and covered every check firing now (no new check).
So a persisting condition sends one message; after the cooldown, or once a new model version serves,
or when a new check fires, it sends again.

The last trigger is kept both in Redis (RedisKeys.monitor_cooldown) and in the monitor's state file:
the message and the cooldown record go to Redis in one MULTI/EXEC transaction, so a crash cannot push a
message without its cooldown; losing either copy alone does not cause a second message.
"""

from __future__ import annotations

import hashlib
import json
import logging

import redis

from shared.config import Settings
from shared.paths import RedisKeys
from shared.schemas import RetrainMessage, parse_utc, utc_now

log = logging.getLogger(__name__)


def suppression(
    *, fired: list[str], serving_version: str | None, last: dict | None, now: str, cooldown_s: float
) -> str | None:
    """Why no message should be sent now (None: send). Pure: the decision, testable on its own."""
    if not fired:
        return "no check fired"
    if not last:
        return None
    if last.get("serving_version") != serving_version:
        return None
    age = (parse_utc(now) - parse_utc(last["time"])).total_seconds()
    if age >= cooldown_s:
        return None
    new = sorted(set(fired) - set(last.get("checks", [])))
    if new:
        return None
    return (
        f"same condition as message {last.get('message_id')} sent {age:.0f} s ago for {serving_version} "
        f"(cooldown {cooldown_s:.0f} s)"
    )


def latest_trigger(*records: dict | None) -> dict | None:
    found = [r for r in records if r and r.get("time")]
    return max(found, key=lambda r: parse_utc(r["time"])) if found else None


def message_id(now: str, fired: list[str], serving_version: str | None) -> str:
    digest = hashlib.sha256(json.dumps([sorted(fired), serving_version]).encode()).hexdigest()[:8]
    stamp = now.replace("-", "").replace(":", "").replace(".", "")
    return f"monitor-{stamp}-{digest}"


class Trigger:
    def __init__(self, *, settings: Settings, redis_client: redis.Redis | None) -> None:
        self.settings = settings
        self.redis = redis_client
        self.keys = RedisKeys.from_settings(settings)

    def last_in_redis(self) -> dict | None:
        if self.redis is None:
            return None
        raw = self.redis.get(self.keys.monitor_cooldown)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            return value if isinstance(value, dict) else None
        except ValueError:
            log.warning("ignoring unreadable cooldown record at %s: %r", self.keys.monitor_cooldown, raw[:200])
            return None

    def consider(
        self,
        *,
        fired: list[str],
        evidence: dict,
        reason: str,
        serving_version: str | None,
        state_last: dict | None,
        now: str | None = None,
    ) -> dict:
        """Send or suppress. Returns {"status": sent|suppressed|none|error, ...}; the record of a sent
        message is under "record" (the caller stores it in the state file)."""
        now = now or utc_now()
        if not fired:
            return {"status": "none", "reason": "no check fired"}
        try:
            last = latest_trigger(self.last_in_redis(), state_last)
        except redis.RedisError as e:
            log.error("retrain trigger: Redis unavailable (%s); will try again next cycle", e)
            return {"status": "error", "reason": f"redis unavailable: {e}"}
        why_not = suppression(
            fired=fired,
            serving_version=serving_version,
            last=last,
            now=now,
            cooldown_s=self.settings.monitoring.cooldown_s,
        )
        if why_not:
            log.info("retrain trigger suppressed: %s", why_not)
            return {
                "status": "suppressed",
                "reason": why_not,
                "last_message_id": last.get("message_id") if last else None,
            }
        if self.redis is None:
            return {"status": "error", "reason": "no Redis client"}
        msg = RetrainMessage(
            id=message_id(now, fired, serving_version),
            reason=reason[:500],
            created_at=now,
            evidence=evidence,
            include_production=True,
        )
        record = {
            "message_id": msg.id,
            "time": now,
            "checks": sorted(fired),
            "serving_version": serving_version,
            "queue": self.keys.retrain_queue,
        }
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.keys.monitor_cooldown, json.dumps(record))
            pipe.lpush(self.keys.retrain_queue, msg.to_line())
            pipe.execute()
        except redis.RedisError as e:
            log.error("retrain trigger: could not push message %s (%s); will try again next cycle", msg.id, e)
            return {"status": "error", "reason": f"redis unavailable: {e}"}
        log.info("retrain message %s pushed to %s: %s", msg.id, self.keys.retrain_queue, msg.reason)
        return {
            "status": "sent",
            "message_id": msg.id,
            "queue": self.keys.retrain_queue,
            "reason": msg.reason,
            "record": record,
        }
