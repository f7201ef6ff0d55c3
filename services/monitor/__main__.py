"""python -m services.monitor [run] [--once] [--config PATH]
python -m services.monitor replay --dataset natural|<recipe>|PATH [--rate R] [--limit N] [--url URL]
                                  [--feedback-delay S] [--no-progress]
python -m services.monitor lineage <request_id>
python -m services.monitor compact

run       the monitoring loop every monitoring.interval_s, or one cycle with --once (the default command)
replay    send a day-2 data set through the inference API, labels later; prints the summary (JSON) on stdout,
          exit 1 if any request failed
lineage   prediction -> model -> data version -> raw file -> commit, as JSON on stdout
compact   closed log segments -> Parquet (logs.parquet_dir), then retention; what was done, as JSON on stdout

The command line follows shared.cli: --config before or after the command (else $CLOCKWORK_CONFIG, else
./config.yaml), answers on stdout, logs on stderr, exit 0 done, 1 failed (Redis unreachable included),
2 usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from shared.cli import Cli, answer
from shared.config import Settings
from shared.lineage_index import catch_up_command
from shared.paths import Paths

log = logging.getLogger("services.monitor")


def run(args: argparse.Namespace, settings: Settings) -> int:
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


def replay(args: argparse.Namespace, settings: Settings) -> int:
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
    answer(json.dumps(result.summary()))
    return 0 if result.predict_errors == 0 and result.feedback_errors == 0 else 1


def lineage(args: argparse.Namespace, settings: Settings) -> int:
    from shared.lineage import lineage_json

    answer(lineage_json(Paths.from_settings(settings), args.request_id))
    return 0


def compact(args: argparse.Namespace, settings: Settings) -> int:
    from services.monitor.monitor import Monitor

    summary = Monitor(settings=settings, redis_client=None).compact()
    answer(json.dumps(summary.summary()))
    return 0


def build_cli() -> Cli:
    cli = Cli(
        "monitor",
        description="Monitor production: labels joined to predictions, error and drift vs training, "
        "reports, retrain trigger. Also: replay day-2 traffic, lineage of a prediction.",
        default="run",
    )
    r = cli.command("run", run, summary="the monitoring loop")
    r.add_argument("--once", action="store_true", help="run one cycle and exit (default: every monitoring.interval_s)")
    rp = cli.command("replay", replay, summary="send a day-2 data set through the inference API, labels later")
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
    ln = cli.command("lineage", lineage, summary="prediction -> model -> data version -> raw file -> commit, as JSON")
    ln.add_argument("request_id")
    cli.command("lineage-index", catch_up_command, summary="catch the lineage index up with the logs' new lines")
    cli.command("compact", compact, summary="compact closed log segments into Parquet, then apply retention")
    return cli


def main(argv: list[str] | None = None) -> int:
    return build_cli().run(argv)


if __name__ == "__main__":
    sys.exit(main())
