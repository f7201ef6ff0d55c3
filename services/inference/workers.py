"""`deployment.workers: N` (N > 1): one listening socket, N inference processes answering on it.

`run_workers` (what `python -m services.inference serve` runs when N > 1) binds deployment.host:port once and
starts N children, each `python -m services.inference serve --instance-id <id>-<i> --listen-fd <fd>`: an
ordinary single-process server (__main__.serve, DrainingServer) that accepts on the inherited socket instead of
binding its own. The kernel hands each new connection to one child. Each child is a whole instance: its own
instance id, prediction and feedback logs, config watcher (a pin change reaches every child within one
deployment.reload_interval_s), coalescing, metrics and deployment_log rows. The parent holds no app state.

Instance ids (`worker_instance_ids`): `--instance-id X` (or $CLOCKWORK_INSTANCE_ID=X) gives X-0 .. X-(N-1);
without either, <hostname>-<parent pid>-<i> (in a container the parent is pid 1: stable across restarts, like
the single-process default). With N = 1 nothing here runs and the id is what it always was.

Why children started afresh (subprocess with an inherited fd) rather than uvicorn's `workers=` or a bare fork:
uvicorn's supervisor stops its workers with its own shutdown (not the drain: keep-alive requests on the wire
are reset, SIGTERM re-raised) and ignores how each ended, and it needs an import string where the service
builds its app from settings; a fork after the parent imported onnxruntime and built state would share what
must be per process. A fresh process per worker runs exactly the single-process code path, drain included.

Stopping: SIGTERM (or the first Ctrl-C) to the parent is forwarded to every child as SIGTERM; each drains
within deployment.drain_grace_s on its own; the parent exits 0 only when every child exited 0 (drained), else 1.
A second Ctrl-C forwards SIGINT (uvicorn's forced exit). The children are in their own process group (a
terminal's Ctrl-C reaches the parent only, which forwards it once) and get SIGTERM if the parent dies
(PR_SET_PDEATHSIG), so none outlives it. A child that exits on its own (a crash, its logs held by another
instance) is not restarted: the parent drains the others and exits 1, and the orchestrator restarts the lot.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from services.inference.logs import INSTANCE_ENV, check_instance_id
from shared.config import Settings

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's default
EXTRA_WAIT_S = 5.0  # past drain_grace_s, the parent kills children that still have not exited
PR_SET_PDEATHSIG = 1


def worker_instance_ids(base: str | None, n: int) -> list[str]:
    """The instance ids of `n` workers: `<base>-<i>` (base: the given id, else $CLOCKWORK_INSTANCE_ID, else
    <hostname>-<this pid>), each checked like any instance id."""
    base = base or os.environ.get(INSTANCE_ENV) or f"{socket.gethostname()}-{os.getpid()}"
    base = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base)[: 100 - len(str(n)) - 1]
    return [check_instance_id(f"{base}-{i}") for i in range(n)]


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (inheritable, so children get it by fd)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a child may outlive a parent killed with SIGKILL


class Workers:
    """The parent: starts the children, forwards signals, waits. `run()` returns the exit code."""

    def __init__(self, settings: Settings, *, instance_id: str | None, config_arg: list[str]) -> None:
        dep = settings.deployment
        self.settings = settings
        self.ids = worker_instance_ids(instance_id, dep.workers)
        self.config_arg = config_arg
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = 0  # signals received: 1 drain, 2 force
        self.grace = dep.drain_grace_s

    def _signal(self, signum: int, frame: object) -> None:
        self.stopping += 1
        forward = signal.SIGTERM if self.stopping == 1 else signal.SIGINT
        log.info("%s: forwarding %s to %d worker(s)", signal.Signals(signum).name, forward.name, len(self.children))
        self._send(forward)

    def _send(self, sig: int) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    def start(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        for iid in self.ids:
            cmd = [sys.executable, "-m", "services.inference", *self.config_arg, "serve", "--instance-id", iid]
            self.children[iid] = subprocess.Popen(
                [*cmd, "--listen-fd", str(fd)],
                pass_fds=(fd,),
                process_group=0,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads yet
            )
        log.info("started %d inference workers: %s", len(self.ids), ", ".join(self.ids))

    def run(self) -> int:
        dep = self.settings.deployment
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        with bind(dep.host, dep.port) as sock:
            self.start(sock)
        # The parent's copy of the socket is closed: when every child has stopped accepting, so has the port.
        failed: list[str] = []
        deadline = None
        while [p.poll() for p in self.children.values()].count(None):  # poll() each: it sets returncode
            if not self.stopping:
                for iid, proc in self.children.items():
                    if proc.returncode is not None and iid not in failed:
                        failed.append(iid)
                        log.error("worker %s exited on its own (status %s): stopping the others", iid, proc.returncode)
                if failed:
                    self.stopping = 1
                    self._send(signal.SIGTERM)
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.grace + EXTRA_WAIT_S
            if deadline is not None and time.monotonic() > deadline:
                log.error("workers still running %.1fs past deployment.drain_grace_s: killing them", EXTRA_WAIT_S)
                self._send(signal.SIGKILL)
            time.sleep(0.05)
        codes = {iid: p.returncode for iid, p in self.children.items()}
        if failed or any(code != 0 for code in codes.values()):
            shown = ", ".join(f"{i} exit {c}" for i, c in codes.items())
            log.error("workers stopped; not every one drained: %s", shown)
            return 1
        log.info("every worker drained (%s)", ", ".join(self.ids))
        return 0


def run_workers(settings: Settings, *, instance_id: str | None, config_arg: list[str]) -> int:
    return Workers(settings, instance_id=instance_id, config_arg=config_arg).run()
