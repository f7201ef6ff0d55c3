"""Logging configured once, in each service's main() (shared.cli does it): one readable line per event, on stderr.

Logs go to stderr so that stdout carries only a command's answer (see shared.cli). The level comes from the
argument, else $CLOCKWORK_LOG_LEVEL, else INFO. Writes nothing to disk.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s [{service}] %(name)s: %(message)s"


def configure_logging(service: str, level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("CLOCKWORK_LOG_LEVEL", "INFO")).upper(),
        format=FORMAT.format(service=service),
        stream=sys.stderr,
        force=True,
    )
