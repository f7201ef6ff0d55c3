"""Logging configured once, in each service's main(): one readable line per event."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s [{service}] %(name)s: %(message)s"


def configure_logging(service: str, level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("CLOCKWORK_LOG_LEVEL", "INFO")).upper(),
        format=FORMAT.format(service=service),
        force=True,
    )
