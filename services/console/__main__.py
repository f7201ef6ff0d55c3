"""python -m services.console [serve] [--host H] [--port P] [--inference-url URL] [--config PATH]

serve     the console web app (the default command) on console.host:console.port (127.0.0.1 in config.yaml);
          it reads the volume and Redis, and GETs the inference service's /ready at console.inference_url
          (null: this host's inference, Settings.local_url). Actions need CLOCKWORK_API_KEY (or _FILE); without
          one they are refused.

The command line follows shared.cli: --config before or after the command (else $CLOCKWORK_CONFIG, else
./config.yaml), logs on stderr, exit 0 done, 1 failed, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import sys

from shared.cli import Cli
from shared.config import Settings, api_key_from_env

log = logging.getLogger("services.console")


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import redis
    import uvicorn

    from services.console.app import create_app

    key = api_key_from_env()
    client = redis.Redis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=2)
    app = create_app(settings, redis=client, api_key=key, inference_url=args.inference_url)
    host = args.host or settings.console.host
    port = args.port or settings.console.port
    log.info("console on http://%s:%d (actions %s)", host, port, "keyed" if key else "refused: no API key set")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def build_cli() -> Cli:
    cli = Cli("console", description="The operator's console: one web page over the whole system.", default="serve")
    s = cli.command("serve", serve, summary="serve the console")
    s.add_argument("--host", help="bind address (default: console.host)")
    s.add_argument("--port", type=int, help="port (default: console.port)")
    s.add_argument("--inference-url", help="inference base URL for /ready (default: console.inference_url)")
    return cli


def main(argv: list[str] | None = None) -> int:
    return build_cli().run(argv)


if __name__ == "__main__":
    sys.exit(main())
