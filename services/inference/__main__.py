"""python -m services.inference [serve|promote vN|rollback|status] [args] [--config PATH]

serve [--instance-id ID]  run the API with uvicorn on deployment.host:deployment.port (the default command);
                          with deployment.workers N > 1, N processes on that port, ids ID-0..ID-(N-1) (workers.py)
promote vN                pin vN in config.yaml (validated, comments kept, atomic); running services swap to it
rollback                  pin the version that served before the current one (from deployment_log.csv)
status                    print the pin, the registry's versions and the last deployment rows on stdout

The command line follows shared.cli: --config before or after the command (else $CLOCKWORK_CONFIG, else
./config.yaml), answers on stdout, logs on stderr, exit 0 done, 1 failed (serve: the app did not start, or
its drain ran out of time), 2 usage or config error.

serve drains on SIGTERM (and the first Ctrl-C), `DrainingServer`: it stops accepting connections and
/ready answers 503; every request in flight is answered and logged, on keep-alive connections too (a
request already on the wire of an idle connection is read, not reset: idle connections stay open
DRAIN_LINGER_S, and every answer from then on carries `Connection: close`); a coalesced batch being
assembled runs as usual. Then the app's lifespan stops (logs closed) and the process exits 0, all within
`deployment.drain_grace_s`. Past it, what is left is cancelled and logged, and the exit code is 1.
With several workers each child drains so; the parent forwards SIGTERM and exits 0 only if every child did.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from services.inference.logs import check_not_held
from shared.cli import Cli, answer
from shared.config import Settings
from shared.paths import Paths

log = logging.getLogger("services.inference")

DRAIN_LINGER_S = 0.5  # idle keep-alive connections stay open this long into a drain (bounded by the grace)
DEFAULT_GRACE_S = 10.0


def uvicorn_config(app, *, host: str, port: int, **overrides):
    """The server settings the service runs with (the benchmark gives its baseline the very same)."""
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        workers=1,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=DEFAULT_GRACE_S,
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


def _closing(app):
    """`app`, its answers carrying `Connection: close` (uvicorn then closes the connection after each)."""

    async def closing(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_closing(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        return await app(scope, receive, send_closing)

    return closing


class DrainingServer(uvicorn.Server):
    """uvicorn's Server whose shutdown is a drain (see the module doc); `on_drain` is called as it begins.

    uvicorn's own shutdown closes idle keep-alive connections at once, resetting a request already sent on
    one, and re-raises SIGTERM after a clean stop (exit status 143); this one does neither. It reaches into
    uvicorn's connection objects (`app`, `cycle`, `shutdown()`), which its h11 and httptools protocols share.
    """

    def __init__(self, config: uvicorn.Config, *, on_drain: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_drain = on_drain
        self.drained = True

    async def shutdown(self, sockets=None) -> None:
        loop = asyncio.get_running_loop()
        grace = float(self.config.timeout_graceful_shutdown or 0)
        deadline = loop.time() + grace
        for server in self.servers:
            server.close()  # no new connections
        for sock in sockets or []:
            sock.close()
        if self.on_drain is not None:
            self.on_drain()
        state = self.server_state
        log.info(
            "draining %d connection(s), %d request(s) within %.1fs", len(state.connections), len(state.tasks), grace
        )
        connections: list[Any] = list(state.connections)  # uvicorn's HTTP protocol objects
        for conn in connections:
            if hasattr(conn, "app"):
                conn.app = _closing(conn.app)  # a request that comes in from now on is the connection's last
            cycle = getattr(conn, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
        await asyncio.sleep(min(DRAIN_LINGER_S, grace))  # a request on the wire of an idle connection is read
        while (state.connections or state.tasks) and not self.force_exit and loop.time() < deadline:
            for conn in list(state.connections):
                conn.shutdown()  # idle: closed now; answering: closed after its answer
            await asyncio.sleep(0.01)
        if state.connections or state.tasks:
            self.drained = False
            log.error(
                "drain incomplete after %.1fs (deployment.drain_grace_s): cancelling %d request(s), closing %d "
                "connection(s)",
                grace,
                len(state.tasks),
                len(state.connections),
            )
            for task in list(state.tasks):
                task.cancel(msg="drain grace exceeded")
            for conn in list(state.connections):
                conn.shutdown()
        else:
            log.info("drained: every request in flight was answered")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _serve(self, sockets=None) -> None:
        await super()._serve(sockets)
        # SIGTERM is the expected way to stop: the exit status says how the drain went (0 drained, 1 cut
        # short), instead of uvicorn re-raising the signal to die by it.
        self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def serve(
    app, *, host: str, port: int, grace_s: float = DEFAULT_GRACE_S, sockets: list[socket.socket] | None = None
) -> bool:
    """Run until stopped (a SIGTERM drains within `grace_s`); False if the app did not start or its drain
    ran out of time (the reason is in the log). `sockets`: accept on these (a worker's inherited listening
    socket) instead of binding host:port."""
    svc = getattr(app.state, "service", None)
    server = DrainingServer(
        uvicorn_config(app, host=host, port=port, timeout_graceful_shutdown=grace_s),
        on_drain=svc.drain if svc is not None else None,
    )
    server.run(sockets=sockets)
    return server.started and server.drained


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    dep = settings.deployment
    if dep.workers > 1 and args.listen_fd is None:  # the parent: nothing of the app is imported or built here
        from services.inference.workers import run_workers

        log.info("serving on http://%s:%d with %d workers", dep.host, dep.port, dep.workers)
        return run_workers(settings, instance_id=args.instance_id, config_arg=["--config", str(settings.config_path)])
    from services.inference.app import create_app

    app = create_app(settings, instance_id=args.instance_id)
    svc = app.state.service
    for held in (svc.prediction_log_path, svc.feedback_log_path):
        # a second instance with the same id: one line and exit 1, before uvicorn starts
        check_not_held(held, rotate_daily=settings.logs.rotate_daily)
    log.info(
        "serving on http://%s:%d (pinned %s, config %s)",
        settings.deployment.host,
        settings.deployment.port,
        settings.deployment.model_version,
        settings.config_path,
    )
    sockets = None if args.listen_fd is None else [socket.socket(fileno=args.listen_fd)]
    return 0 if serve(app, host=dep.host, port=dep.port, grace_s=dep.drain_grace_s, sockets=sockets) else 1


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
    s.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's socket (workers.py)
    p = cli.command("promote", promote, summary="pin a model version in config.yaml; running services swap to it")
    p.add_argument("version", help="the model version to pin, e.g. v3")
    cli.command("rollback", rollback, summary="pin the version that served before the current one")
    cli.command("status", status, summary="print the pin, the registry's versions and the last deployment rows")
    return cli


def main(argv: list[str] | None = None) -> int:
    return build_cli().run(argv)


if __name__ == "__main__":
    sys.exit(main())
