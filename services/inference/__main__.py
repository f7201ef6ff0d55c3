"""python -m services.inference [serve|promote vN|rollback|status] [args] [--config PATH]

serve [--instance-id ID]  run the API with uvicorn on deployment.host:deployment.port (the default command)
promote vN                pin vN in config.yaml (validated, comments kept, atomic); running services swap to it
rollback                  pin the version that served before the current one (from deployment_log.csv)
status                    print the pin, the registry's versions and the last deployment rows on stdout

The command line follows shared.cli: --config before or after the command (else $CLOCKWORK_CONFIG, else
./config.yaml), answers on stdout, logs on stderr, exit 0 done, 1 failed (serve: the app did not start),
2 usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from shared.cli import Cli, answer
from shared.config import Settings
from shared.paths import Paths

log = logging.getLogger("services.inference")


def uvicorn_config(app, *, host: str, port: int, **overrides):
    """The server settings the service runs with (the benchmark gives its baseline the very same)."""
    import uvicorn

    options: dict[str, Any] = dict(
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


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    from services.inference.app import create_app

    app = create_app(settings, instance_id=args.instance_id)
    log.info(
        "serving on http://%s:%d (pinned %s, config %s)",
        settings.deployment.host,
        settings.deployment.port,
        settings.deployment.model_version,
        settings.config_path,
    )
    return 0 if serve(app, host=settings.deployment.host, port=settings.deployment.port) else 1


def promote(args: argparse.Namespace, settings: Settings) -> int:
    from shared import pin

    previous = pin.set_pin(settings.config_path, args.version, paths=Paths.from_settings(settings), event="promote")
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


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    from shared import pin

    current, target = pin.rollback(settings.config_path, paths=Paths.from_settings(settings))
    log.info("rolled back: pinned %s (was %s) in %s", target, current, settings.config_path)
    return 0


def status(args: argparse.Namespace, settings: Settings) -> int:
    from shared import deploylog, pin
    from shared.registry import Registry

    paths = Paths.from_settings(settings)
    lines = [
        f"pinned: {pin.read_pin(settings.config_path)} in {settings.config_path}",
        f"registry: {', '.join(Registry(paths=paths).versions()) or '(empty)'}",
    ]
    for row in deploylog.read_rows(paths)[-10:]:
        lines.append(
            f"deployment: {row['time']} {row['event']} {row['version']} (was {row['previous_version'] or '-'})"
            f" by {row['instance_id']} {row['detail']}"
        )
    answer("\n".join(lines))
    return 0


def build_cli() -> Cli:
    cli = Cli("inference", description="Serve the pinned model; promote or roll back.", default="serve")
    s = cli.command("serve", serve_command, summary="run the API on deployment.host:deployment.port")
    s.add_argument(
        "--instance-id", help="this replica's id: names its log files (default: $CLOCKWORK_INSTANCE_ID or host-pid)"
    )
    p = cli.command("promote", promote, summary="pin a model version in config.yaml; running services swap to it")
    p.add_argument("version", help="the model version to pin, e.g. v3")
    cli.command("rollback", rollback, summary="pin the version that served before the current one")
    cli.command("status", status, summary="print the pin, the registry's versions and the last deployment rows")
    return cli


def main(argv: list[str] | None = None) -> int:
    return build_cli().run(argv)


if __name__ == "__main__":
    sys.exit(main())
