"""python -m services.prep [run|verify] [--config PATH]

run      produce every data version from the raw CSV, one manifest entry per file (the default command)
verify   re-hash every file in the manifest; prints one line per problem on stdout, exit 1 if any

The command line follows shared.cli: --config before or after the command (else $CLOCKWORK_CONFIG, else
./config.yaml), answers on stdout, logs on stderr, exit 0 done, 1 failed, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import sys

from shared.cli import Cli, answer
from shared.config import Settings
from shared.datastore import DataStore
from shared.paths import Paths

log = logging.getLogger("services.prep")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.prep import pipeline

    entries = pipeline.run(settings)
    log.info("prep done: %d file(s) in the manifest", len(entries))
    return 0


def verify(args: argparse.Namespace, settings: Settings) -> int:
    problems = DataStore(paths=Paths.from_settings(settings)).verify()
    for p in problems:
        answer(p)
    (log.error if problems else log.info)("verify: %d problem(s)", len(problems))
    return 1 if problems else 0


def build_cli() -> Cli:
    cli = Cli("prep", description="Build the versioned data sets from the raw CSV.", default="run")
    cli.command("run", run, summary="produce every data version")
    cli.command("verify", verify, summary="re-hash every file in the manifest")
    return cli


def main(argv: list[str] | None = None) -> int:
    return build_cli().run(argv)


if __name__ == "__main__":
    sys.exit(main())
