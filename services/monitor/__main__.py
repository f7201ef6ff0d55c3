"""python -m services.monitor [run] [--once] [--config PATH]
python -m services.monitor replay --dataset natural|<recipe>|PATH [--rate R] [--limit N] [--url URL] [--feedback-delay S]
python -m services.monitor lineage <request_id>
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from shared.config import load_settings_or_exit
from shared.errors import ClockworkError
from shared.logging_setup import configure_logging

log = logging.getLogger("services.monitor")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=argparse.SUPPRESS, help="config.yaml path (default: $CLOCKWORK_CONFIG or ./config.yaml)"
    )
    parser = argparse.ArgumentParser(
        prog="python -m services.monitor",
        parents=[common],
        description="Monitor production: labels joined to predictions, error and drift vs training, "
        "reports, retrain trigger. Also: replay day-2 traffic, lineage of a prediction.",
    )
    parser.add_argument(
        "--once", action="store_true", help="run one cycle and exit (default: every monitoring.interval_s)"
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="the monitoring loop (the default command)")
    run.add_argument("--once", action="store_true", default=argparse.SUPPRESS, help="run one cycle and exit")
    rp = sub.add_parser(
        "replay", parents=[common], help="send a day-2 data set through the inference API, labels later"
    )
    rp.add_argument(
        "--dataset", required=True, help="natural, a drift recipe name from config.yaml, or a CSV path in the manifest"
    )
    rp.add_argument("--rate", type=float, help="requests per second (default: monitoring.replay.rate_per_s)")
    rp.add_argument("--limit", type=int, help="send only the first N rows")
    rp.add_argument("--url", help="inference base URL (default: monitoring.replay.url)")
    rp.add_argument(
        "--feedback-delay",
        type=float,
        help="seconds before each label is posted (default: monitoring.replay.feedback_delay_s)",
    )
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    ln = sub.add_parser(
        "lineage", parents=[common], help="prediction -> model -> data version -> raw file -> commit, as JSON"
    )
    ln.add_argument("request_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    configure_logging("monitor")
    settings = load_settings_or_exit(getattr(args, "config", None))
    from shared.paths import Paths

    try:
        if command == "replay":
            from services.monitor.replay import replay

            result = replay(
                settings=settings,
                dataset=args.dataset,
                rate=args.rate,
                limit=args.limit,
                url=args.url,
                feedback_delay=args.feedback_delay,
                progress=not args.no_progress,
            )
            log.info("replay summary: %s", json.dumps(result.summary()))
            return 0 if result.predict_errors == 0 and result.feedback_errors == 0 else 1
        if command == "lineage":
            from shared.lineage import lineage_json

            sys.stdout.write(lineage_json(Paths.from_settings(settings), args.request_id) + "\n")
            return 0
        import redis

        from services.monitor.monitor import Monitor, run_loop

        client = redis.Redis.from_url(settings.redis.url, socket_timeout=10, socket_connect_timeout=5)
        monitor = Monitor(settings=settings, redis_client=client)
        if args.once:
            monitor.cycle()
            return 0
        stop = threading.Event()

        def on_signal(signum, frame):
            log.info("signal %d: stopping after the current cycle", signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        log.info("monitor loop: every %.0f s (SIGTERM to stop)", settings.monitoring.interval_s)
        run_loop(monitor, interval_s=settings.monitoring.interval_s, stop=stop)
        return 0
    except ClockworkError as e:
        log.error("monitor %s failed: %s", command, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
