"""One command-line style for the four services, shared by their `__main__` modules.

    python -m services.<name> <command> [args] [--config PATH]

`--config` is accepted before or after the command (else $CLOCKWORK_CONFIG, else ./config.yaml, the lookup of
shared.config.load_settings). A service with a default command runs it when the command is left out, with that
command's options (`python -m services.monitor --once` is `run --once`).

A run: parse the arguments, configure logging once (stderr), load the settings, call the command's handler.
Exit codes: 0 done; 1 failed (a ClockworkError or a Redis error: one log line naming the command and the reason);
2 usage or config error (one line on stderr: the usage problem, or the config file, key and reason).
A command's answer (a status, verify results, lineage JSON, a pushed id) goes to stdout through `answer`; logs go
to stderr. This module writes nothing else: a crash leaves nothing behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from shared.config import CONFIG_ENV, Settings, load_settings, redact_url
from shared.errors import ClockworkError, ConfigError
from shared.logging_setup import configure_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

CONFIG_HELP = f"config.yaml path (default: ${CONFIG_ENV} or ./config.yaml)"

Handler = Callable[[argparse.Namespace, Settings], int]


class UsageError(Exception):
    """The command line is wrong: unknown command, missing or unexpected argument."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage problem as one line (raised, so that main() returns 2 instead of exiting)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def answer(text: str) -> None:
    """A command's answer on stdout (logs go to stderr), one line or a block ending with a newline."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Cli:
    """One service's command line: its commands, each a handler `(args, settings) -> exit code`."""

    def __init__(self, service: str, *, description: str, default: str | None = None) -> None:
        self.service = service
        self.default = default
        self.log = logging.getLogger(f"services.{service}")
        self.parser = _Parser(prog=f"python -m services.{service}", description=description)
        self.parser.add_argument("--config", default=None, help=CONFIG_HELP)
        self._commands = self.parser.add_subparsers(
            dest="command", metavar="command", title="commands", required=default is None
        )
        self._handlers: dict[str, Handler] = {}

    def command(self, name: str, handler: Handler, *, summary: str) -> argparse.ArgumentParser:
        """Add a command; returns its parser for the command's own arguments."""
        if name == self.default:
            summary += " (the default command)"
        sub = self._commands.add_parser(name, help=summary, description=summary)
        # SUPPRESS: a --config given before the command is not reset by the command's own default.
        sub.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        self._handlers[name] = handler
        return sub

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """The parsed command line; UsageError (one line) if it is wrong."""
        args = list(sys.argv[1:] if argv is None else argv)
        if self.default is not None and self._command_left_out(args):
            args.insert(0, self.default)
        return self.parser.parse_args(args)

    @staticmethod
    def _command_left_out(args: list[str]) -> bool:
        """True when no command comes first: nothing but --config, or an option of the default command."""
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--config":
                i += 2
            elif arg.startswith("--config="):
                i += 1
            else:
                return arg.startswith("-") and arg not in ("-h", "--help")
        return True

    def run(self, argv: Sequence[str] | None = None) -> int:
        """Parse, configure logging, load settings, run the command; the exit code (never a traceback for the
        failures a user can cause: usage, config, domain errors, Redis unreachable)."""
        try:
            args = self.parse(argv)
        except UsageError as e:
            sys.stderr.write(f"usage error: {e}\n")
            return EXIT_USAGE
        except SystemExit as e:  # --help printed its text
            return e.code if isinstance(e.code, int) else EXIT_OK
        configure_logging(self.service)
        try:
            settings = load_settings(args.config)
        except ConfigError as e:
            sys.stderr.write(f"config error: {e}\n")
            return EXIT_USAGE
        try:
            return self._handlers[args.command](args, settings)
        except ClockworkError as e:
            self.log.error("%s %s failed: %s", self.service, args.command, e)
            return EXIT_FAILED
        except Exception as e:  # Redis down and the like: one line, not a traceback
            import redis

            if isinstance(e, redis.RedisError):
                self.log.error(
                    "%s %s failed: Redis at %s: %s", self.service, args.command, redact_url(settings.redis.url), e
                )
                return EXIT_FAILED
            raise
