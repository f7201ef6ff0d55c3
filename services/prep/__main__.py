"""python -m services.prep [run|verify] [--config PATH]"""

from __future__ import annotations

import argparse
import logging
import sys

from shared.config import load_settings_or_exit
from shared.datastore import DataStore
from shared.errors import ClockworkError
from shared.logging_setup import configure_logging
from shared.paths import Paths

log = logging.getLogger("services.prep")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.prep", description="Build the versioned data sets from the raw CSV."
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "verify"],
        help="run: produce every data version (default); verify: re-hash every file in the manifest",
    )
    parser.add_argument("--config", help="config.yaml path (default: $CLOCKWORK_CONFIG or ./config.yaml)")
    args = parser.parse_args(argv)
    configure_logging("prep")
    settings = load_settings_or_exit(args.config)
    from services.prep import pipeline

    try:
        if args.command == "verify":
            problems = DataStore(paths=Paths.from_settings(settings)).verify()
            for p in problems:
                log.error("%s", p)
            log.info("verify: %d problem(s)", len(problems))
            return 1 if problems else 0
        entries = pipeline.run(settings)
        log.info("prep done: %d file(s) in the manifest", len(entries))
        return 0
    except ClockworkError as e:
        log.error("prep failed: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
