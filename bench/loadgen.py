"""A small HTTP/1.1 keep-alive load generator on raw sockets (asyncio + uvloop), one or more processes.

Made to cost the server nothing but the requests: each process keeps `connections` sockets open and
sends one prepared request per socket at a time (closed loop), or at a fixed total rate (open loop,
latency measured from the send, or from queueing when no connection is free, so a slow server cannot
hide its queueing).
Bounded in requests and in time. Used by bench/inference_bench.py; not a test.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] ships it
    uvloop = None


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("ascii")
    return head + body


@dataclass
class Result:
    requests: int = 0
    errors: int = 0  # non-2xx answers or broken connections
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, open loop only
    statuses: dict[int, int] = field(default_factory=dict)

    def merge(self, other: Result) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds = max(self.seconds, other.seconds)
        self.latencies.extend(other.latencies)
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v


class _Conn(asyncio.Protocol):
    """One keep-alive connection: send a request, parse the answer (Content-Length framed), repeat."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.sent_at = 0.0
        self.busy = False
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.ready.set_result(None)

    def send(self, scheduled: float) -> None:
        self.busy = True
        self.sent_at = scheduled
        self.transport.write(self.client.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = int(head[9:12])
            self.buf = self.buf[total:]
            self.busy = False
            self.client.done(self, status)

    def connection_lost(self, exc) -> None:
        if self.busy:
            self.busy = False
            self.client.broken(self)


class _Client:
    def __init__(self, request: bytes, max_requests: int, deadline: float, record_latency: bool) -> None:
        self.request = request
        self.max_requests = max_requests
        self.deadline = deadline
        self.record = record_latency
        self.result = Result()
        self.sent = 0
        self.finished = asyncio.get_running_loop().create_future()
        self.idle: list[_Conn] = []
        self.backlog: list[float] = []  # open loop: scheduled send times waiting for a free connection

    def can_send(self) -> bool:
        return self.sent < self.max_requests and time.perf_counter() < self.deadline

    def start(self, conn: _Conn, scheduled: float) -> None:
        self.sent += 1
        conn.send(scheduled)

    def done(self, conn: _Conn, status: int) -> None:
        now = time.perf_counter()
        r = self.result
        r.requests += 1
        r.statuses[status] = r.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            r.errors += 1
        if self.record:
            r.latencies.append(now - conn.sent_at)
        self.next(conn)

    def broken(self, conn: _Conn) -> None:
        self.result.errors += 1
        self.result.statuses[0] = self.result.statuses.get(0, 0) + 1
        self.check_finished()

    def next(self, conn: _Conn) -> None:
        raise NotImplementedError

    def check_finished(self) -> None:
        pass


class _ClosedLoop(_Client):
    def next(self, conn: _Conn) -> None:
        if self.can_send():
            self.start(conn, time.perf_counter())
        else:
            self.idle.append(conn)
            self.check_finished()

    def check_finished(self) -> None:
        if not self.finished.done() and self.result.requests + self.result.errors >= self.sent and not self.can_send():
            self.finished.set_result(None)


class _OpenLoop(_Client):
    def next(self, conn: _Conn) -> None:
        if self.backlog:
            self.start(conn, self.backlog.pop(0))
        else:
            self.idle.append(conn)
        self.check_finished()

    def fire(self, scheduled: float) -> None:
        if self.idle:
            self.start(self.idle.pop(), scheduled)
        else:
            self.backlog.append(scheduled)

    def check_finished(self) -> None:
        if self.finished.done() or self.backlog:
            return
        if self.sent >= self.max_requests or time.perf_counter() >= self.deadline:
            if self.result.requests + self.result.errors >= self.sent:
                self.finished.set_result(None)


async def _run_one(
    host: str, port: int, request: bytes, connections: int, max_requests: int, seconds: float, rate: float | None
) -> Result:
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds
    client: _Client = (_OpenLoop if rate else _ClosedLoop)(request, max_requests, deadline, record_latency=bool(rate))
    conns = []
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: _Conn(client), host, port)
        conns.append(proto)
    await asyncio.gather(*(c.ready for c in conns))
    started = time.perf_counter()
    client.deadline = started + seconds
    if rate:
        client.idle.extend(conns)
        # Requests due by now are sent at once (the event loop's timers are coarse); latency counts from
        # the moment the client sent, or queued the request for want of a free connection, so a slow
        # server is charged for its queue and the client's timer slack is not.
        interval = 1.0 / rate
        n = 0
        while n < max_requests:
            now = time.perf_counter()
            if now >= client.deadline:
                break
            while n < max_requests and started + n * interval <= now:
                client.fire(now)
                n += 1
            await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
        client.check_finished()
    else:
        for c in conns:
            if client.can_send():
                client.start(c, time.perf_counter())
    try:
        await asyncio.wait_for(client.finished, timeout=seconds + 30)
    except TimeoutError:
        pass
    client.result.seconds = time.perf_counter() - started
    for c in conns:
        if c.transport:
            c.transport.close()
    return client.result


def _worker(args: tuple, out: mp.Queue) -> None:
    cpus = args[-1]
    if cpus:
        os.sched_setaffinity(0, cpus)
    if uvloop is not None:
        uvloop.install()
    out.put(asyncio.run(_run_one(*args[:-1])))


def run_load(
    *,
    host: str,
    port: int,
    path: str,
    body: bytes,
    processes: int = 1,
    connections: int = 8,
    max_requests: int = 200_000,
    seconds: float = 5.0,
    rate: float | None = None,
    cpus: set[int] | None = None,
) -> Result:
    """Drive `POST path` with `body`. Closed loop by default; `rate` (total req/s) makes it open loop."""
    request = build_request(host, port, path, body)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    per_rate = rate / processes if rate else None
    per_max = max(1, max_requests // processes)
    procs = [
        ctx.Process(target=_worker, args=((host, port, request, connections, per_max, seconds, per_rate, cpus), out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    total = Result()
    deadline = time.monotonic() + seconds + 60
    received = 0
    while received < len(procs):
        try:
            total.merge(out.get(timeout=0.5))
            received += 1
        except queue.Empty:
            if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                codes = [p.exitcode for p in procs]
                raise RuntimeError(f"load generator process failed (exit codes {codes})") from None
    for p in procs:
        p.join(10)
    return total
