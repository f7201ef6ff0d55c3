"""python -m services.trainer <train|worker|status|push|shadow|bootstrap> [args] [--config PATH]

train                 train from config.yaml and register a new model version
worker [--max-jobs N] consume retrain messages from Redis (SIGTERM finishes the current job)
status ID             print a retrain job's status (JSON) on stdout, with its lease ("none" when its worker is
                      gone) and a note when a running job has lost its lease or was requeued
push --reason TEXT    validate and push a retrain message; prints its id on stdout
shadow VERSION [--last N] [--live]
                      replay the newest N logged predictions (default 5000) through registered VERSION offline;
                      prints the comparison with the served labels as JSON (status "no_traffic" when none is logged);
                      --live: no replay, what VERSION answered as the live shadow (deployment.shadow_version) in
                      those records, against the served labels and the feedback logs' labels (status "no_shadow")
bootstrap [--check]   train a first model when the registry is empty and lacks the pinned version;
                      --check only tells (exit 0) whether the pinned version is registered and intact

There is no default command. The command line follows shared.cli: --config before or after the command (else
$CLOCKWORK_CONFIG, else ./config.yaml), answers on stdout, logs on stderr, exit 0 done, 1 failed (Redis
unreachable included), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import uuid
from datetime import UTC, datetime

from shared.cli import Cli, answer
from shared.config import Settings

log = logging.getLogger("services.trainer")


def redis_client(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.redis.url, socket_connect_timeout=5, health_check_interval=30)


def train(args: argparse.Namespace, settings: Settings) -> int:
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


def bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from services.trainer.train import bootstrap

    return bootstrap(settings, check_only=args.check)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    from services.trainer.worker import Worker

    w = Worker(settings=settings, redis=redis_client(settings), max_jobs=args.max_jobs, poll_s=args.poll)
    signal.signal(signal.SIGTERM, lambda signum, frame: w.request_stop())
    signal.signal(signal.SIGINT, lambda signum, frame: w.request_stop())
    w.run()
    return 0


def status(args: argparse.Namespace, settings: Settings) -> int:
    from shared.queue import RetrainQueue

    queue = RetrainQueue.from_settings(settings, redis=redis_client(settings))
    answer(json.dumps(queue.job_view(args.id), indent=2, sort_keys=True))
    return 0


def push(args: argparse.Namespace, settings: Settings) -> int:
    from shared.queue import RetrainQueue
    from shared.schemas import RetrainMessage, parse_retrain_message, utc_now

    queue = RetrainQueue.from_settings(settings, redis=redis_client(settings))
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
    answer(message.id)
    return 0


def shadow(args: argparse.Namespace, settings: Settings) -> int:
    from services.trainer.live_shadow import live_shadow
    from services.trainer.shadow import shadow_version

    if args.live:
        live = live_shadow(settings, args.version, last=args.last)
        answer(json.dumps(live.model_dump(mode="json"), indent=2, sort_keys=True))
        return 0
    report = shadow_version(settings, args.version, last=args.last)
    answer(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True))
    return 0


def build_cli() -> Cli:
    cli = Cli("trainer", description="Train, register and retrain models.")
    cli.command("train", train, summary="train from config.yaml and register a new version")
    w = cli.command("worker", worker, summary="consume retrain messages from Redis")
    w.add_argument("--max-jobs", type=int, default=None, help="stop after N messages (default: run until SIGTERM)")
    w.add_argument("--poll", type=float, default=1.0, help="seconds to block on the queue per wait (default 1)")
    s = cli.command("status", status, summary="print a retrain job's status (JSON)")
    s.add_argument("id", help="the message id")
    p = cli.command("push", push, summary="validate and push a retrain message; prints its id")
    p.add_argument("--reason", required=True)
    p.add_argument("--id", help="message id (default: manual-<time>-<random>)")
    p.add_argument("--data-version", help="train on this data version instead of building one")
    p.add_argument("--no-production", action="store_true", help="do not add labelled production rows")
    sh = cli.command("shadow", shadow, summary="replay recent logged predictions through a version offline (JSON)")
    sh.add_argument("version", help="the registered model version, e.g. v2")
    sh.add_argument("--last", type=int, default=5000, help="the newest N logged predictions (default 5000)")
    sh.add_argument(
        "--live", action="store_true", help="summarize what VERSION answered as the live shadow (logged), no replay"
    )
    b = cli.command("bootstrap", bootstrap, summary="train a first model if the registry lacks the pinned version")
    b.add_argument("--check", action="store_true", help="only check that the pinned version is registered and intact")
    return cli


def main(argv: list[str] | None = None) -> int:
    return build_cli().run(argv)


if __name__ == "__main__":
    sys.exit(main())
