"""python -m services.trainer {train|worker|status|push} [--config PATH]

train                 train from config.yaml and register a new model version
worker [--max-jobs N] consume retrain messages from Redis (SIGTERM finishes the current job)
status ID             print a retrain job's status (JSON) on stdout
push --reason TEXT    validate and push a retrain message; prints its id
bootstrap [--check]   train a first model when the registry is empty and lacks the pinned version;
                      --check only tells (exit 0) whether the pinned version is registered and intact
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import uuid
from datetime import UTC, datetime

from shared.config import load_settings_or_exit, redact_url
from shared.errors import ClockworkError
from shared.logging_setup import configure_logging

log = logging.getLogger("services.trainer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.trainer", description="Train, register and retrain models."
    )
    parser.add_argument("--config", help="config.yaml path (default: $CLOCKWORK_CONFIG or ./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train from config.yaml and register a new version")
    w = sub.add_parser("worker", help="consume retrain messages from Redis")
    w.add_argument("--max-jobs", type=int, default=None, help="stop after N messages (default: run until SIGTERM)")
    w.add_argument("--poll", type=float, default=1.0, help="seconds to block on the queue per wait (default 1)")
    s = sub.add_parser("status", help="print a retrain job's status")
    s.add_argument("id", help="the message id")
    p = sub.add_parser("push", help="validate and push a retrain message")
    p.add_argument("--reason", required=True)
    p.add_argument("--id", help="message id (default: manual-<time>-<random>)")
    p.add_argument("--data-version", help="train on this data version instead of building one")
    p.add_argument("--no-production", action="store_true", help="do not add labelled production rows")
    b = sub.add_parser("bootstrap", help="train a first model if the registry lacks the pinned version")
    b.add_argument("--check", action="store_true", help="only check that the pinned version is registered and intact")
    # Accept --config after the sub-command as well.
    for sp in (w, s, p, b, sub.choices["train"]):
        sp.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.config = args.config_sub or args.config
    return args


def redis_client(settings):
    import redis

    return redis.Redis.from_url(settings.redis.url, socket_connect_timeout=5, health_check_interval=30)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("trainer")
    settings = load_settings_or_exit(args.config)
    try:
        if args.command == "train":
            from services.trainer.train import COMMAND_TRIGGER, train_and_register

            md = train_and_register(settings, trigger={**COMMAND_TRIGGER, "config": str(settings.config_path)})
            m = md["metrics"]
            log.info(
                "registered %s: validation f1=%.4f precision=%.4f recall=%.4f; onnx sha256 %s",
                md["version"],
                m["f1"],
                m["precision"],
                m["recall"],
                md["onnx_sha256"],
            )
            return 0
        if args.command == "bootstrap":
            from services.trainer.train import bootstrap

            return bootstrap(settings, check_only=args.check)
        if args.command == "worker":
            from services.trainer.worker import Worker

            worker = Worker(settings=settings, redis=redis_client(settings), max_jobs=args.max_jobs, poll_s=args.poll)
            signal.signal(signal.SIGTERM, lambda signum, frame: worker.request_stop())
            signal.signal(signal.SIGINT, lambda signum, frame: worker.request_stop())
            worker.run()
            return 0
        from shared.queue import RetrainQueue

        queue = RetrainQueue.from_settings(settings, redis=redis_client(settings))
        if args.command == "status":
            sys.stdout.write(json.dumps(queue.require_job(args.id), indent=2, sort_keys=True) + "\n")
            return 0
        from shared.schemas import RetrainMessage, parse_retrain_message, utc_now

        message_id = args.id or f"manual-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        raw = {
            "id": message_id,
            "reason": args.reason,
            "created_at": utc_now(),
            "include_production": not args.no_production,
        }
        if args.data_version:
            raw["data_version"] = args.data_version
        message: RetrainMessage = parse_retrain_message(json.dumps(raw))
        queue.push(message)
        sys.stdout.write(message.id + "\n")
        return 0
    except ClockworkError as e:
        log.error("%s failed: %s", args.command, e)
        return 1
    except Exception as e:  # Redis down and the like: one line, not a traceback
        import redis

        if isinstance(e, redis.RedisError):
            log.error("%s failed: Redis at %s: %s", args.command, redact_url(settings.redis.url), e)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
