"""python -m services.inference [serve|promote vN|rollback|status] [--config PATH]

serve          run the API with uvicorn on deployment.host:deployment.port (default command)
promote vN     pin vN in config.yaml (validated, comments kept, atomic); running services swap to it
rollback       pin the version that served before the current one (from deployment_log.csv)
status         print the pin, the registry's versions and the last deployment rows
"""

from __future__ import annotations

import argparse
import logging
import sys

from shared.config import load_settings_or_exit
from shared.errors import ClockworkError
from shared.logging_setup import configure_logging
from shared.paths import Paths

log = logging.getLogger("services.inference")


def uvicorn_config(app, *, host: str, port: int, **overrides):
    """The server settings the service runs with (the benchmark gives its baseline the very same)."""
    import uvicorn

    options = dict(
        host=host,
        port=port,
        workers=1,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


def serve(app, *, host: str, port: int) -> bool:
    """Run until stopped; False if the app did not start (the reason is in the log)."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, host=host, port=port))
    server.run()
    return server.started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.inference", description="Serve the pinned model; promote or roll back."
    )
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "promote", "rollback", "status"])
    parser.add_argument("version", nargs="?", help="promote: the model version to pin, e.g. v3")
    parser.add_argument("--config", help="config.yaml path (default: $CLOCKWORK_CONFIG or ./config.yaml)")
    parser.add_argument(
        "--instance-id", help="this replica's id: names its log files (default: $CLOCKWORK_INSTANCE_ID or host-pid)"
    )
    args = parser.parse_args(argv)
    if args.command == "promote" and not args.version:
        parser.error("promote needs a version, e.g. promote v3")
    if args.command != "promote" and args.version:
        parser.error(f"{args.command} takes no version")
    configure_logging("inference")
    settings = load_settings_or_exit(args.config)
    paths = Paths.from_settings(settings)
    from shared import deploylog, pin

    try:
        if args.command == "serve":
            from services.inference.app import create_app

            app = create_app(settings, instance_id=args.instance_id)
            log.info(
                "serving on http://%s:%d (pinned %s, config %s)",
                settings.deployment.host,
                settings.deployment.port,
                settings.deployment.model_version,
                settings.config_path,
            )
            return 0 if serve(app, host=settings.deployment.host, port=settings.deployment.port) else 3
        if args.command == "promote":
            previous = pin.set_pin(settings.config_path, args.version, paths=paths, event="promote")
            if previous == args.version:
                log.info("%s is already pinned in %s; nothing changed", args.version, settings.config_path)
            else:
                log.info(
                    "pinned %s (was %s) in %s; running services swap within %.1fs",
                    args.version,
                    previous,
                    settings.config_path,
                    settings.deployment.reload_interval_s,
                )
            return 0
        if args.command == "rollback":
            current, target = pin.rollback(settings.config_path, paths=paths)
            log.info("rolled back: pinned %s (was %s) in %s", target, current, settings.config_path)
            return 0
        from shared.registry import Registry

        log.info("pinned: %s in %s", pin.read_pin(settings.config_path), settings.config_path)
        log.info("registry: %s", ", ".join(Registry(paths=paths).versions()) or "(empty)")
        for row in deploylog.read_rows(paths)[-10:]:
            log.info(
                "deployment: %s %s %s (was %s) by %s %s",
                row["time"],
                row["event"],
                row["version"],
                row["previous_version"] or "-",
                row["instance_id"],
                row["detail"],
            )
        return 0
    except ClockworkError as e:
        log.error("%s failed: %s", args.command, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
