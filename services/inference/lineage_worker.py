"""Lineage lookups in child processes, so that the audit route never competes with /predict for the interpreter.

A lookup (shared/lineage.py: catch the lineage index up, read the request's lines, the model's metadata and the
data's provenance) is short but busy; run in a thread of the serving process it contends with the event loop for
the GIL and took a third of /predict's throughput at 36 lookups a second. Here each lookup runs in one of
`security.lineage_concurrency` long-lived children (`python -m services.inference.lineage_worker`), started on
the first lookup and spoken to in JSON lines over their stdin and stdout (no pickle):

    parent -> child, once:     {"settings": <Settings as JSON>, "config_path": "<file>"}
    parent -> child, per id:   <request_id>            (ids match shared.schemas.MESSAGE_ID_RE: no newline)
    child -> parent, per id:   {"status": 200, "body": "<lineage JSON>"} | {"status": 404|503, "detail": "..."}

A child logs on the service's stderr. A child that exits (killed, out of memory) answers its lookup 503 naming
its exit code and is replaced by the next lookup; a lookup whose client went away still reads its answer, so the
child's next answer is never taken for another request's. The children exit when their stdin closes (the service
stopped, or was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from shared.config import Settings

log = logging.getLogger(__name__)

MAX_ANSWER = 256 << 20  # the longest answer line read from a child (a lineage document is a few KiB)


@dataclass(frozen=True)
class Answer:
    status: int  # 200, 404 or 503
    text: str  # the lineage JSON (200) or what went wrong


class LineageWorkers:
    """`count` children, each answering one lookup at a time; callers bound how many wait (routes/ops.py)."""

    def __init__(self, settings: Settings, *, count: int) -> None:
        self.hello = (
            orjson.dumps({"settings": settings.model_dump(mode="json"), "config_path": str(settings.config_path)})
            + b"\n"
        )
        self.idle: asyncio.Queue[asyncio.subprocess.Process | None] = asyncio.Queue()
        for _ in range(count):
            self.idle.put_nowait(None)  # started when first taken
        self.children: set[asyncio.subprocess.Process] = set()

    async def lookup(self, request_id: str) -> Answer:
        child = await self.idle.get()
        # shielded: a client that goes away must not leave an answer unread in the child's pipe
        return await asyncio.shield(self._exchange(child, request_id))

    async def _exchange(self, child: asyncio.subprocess.Process | None, request_id: str) -> Answer:
        try:
            if child is None or child.returncode is not None:
                child = await self._start()
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(request_id.encode("ascii") + b"\n")
            await child.stdin.drain()
            line = await child.stdout.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError("it closed its output")
            reply = orjson.loads(line)
            return Answer(int(reply["status"]), reply["body"] if reply["status"] == 200 else reply["detail"])
        except (OSError, ConnectionError, ValueError, KeyError, asyncio.LimitOverrunError) as e:
            code = await self._retire(child)
            log.error("lineage worker %s failed on %r (%s; exit code %s): the next lookup starts a new one",
                      child.pid if child else None, request_id, e, code)  # fmt: skip
            child = None
            return Answer(503, f"lineage unavailable: the lookup process failed ({e}; exit code {code}); retry")
        finally:
            self.idle.put_nowait(child)

    async def _start(self) -> asyncio.subprocess.Process:
        import services

        root = str(Path(services.__file__).resolve().parent.parent)  # where this code is: the child runs it too
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.inference.lineage_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, limit=MAX_ANSWER,
        )  # fmt: skip
        assert child.stdin is not None
        child.stdin.write(self.hello)
        self.children.add(child)
        log.info("lineage worker %d started", child.pid)
        return child

    async def _retire(self, child: asyncio.subprocess.Process | None) -> int | None:
        if child is None:
            return None
        self.children.discard(child)
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        return await child.wait()

    async def close(self) -> None:
        """Close the children's input (they exit) and wait for them; a child that lingers is killed."""
        for child in list(self.children):
            if child.stdin is not None:
                child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 5.0)
            except TimeoutError:
                await self._retire(child)
        self.children.clear()


def main() -> int:
    """The child: settings from the first line, then one answer line per request id line, until stdin closes."""
    from shared.errors import ClockworkError, NotFoundError
    from shared.lineage import lineage_json
    from shared.logging_setup import configure_logging
    from shared.paths import Paths

    configure_logging("inference-lineage")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    hello = orjson.loads(stdin.readline() or b"null")
    settings = Settings.model_validate(hello["settings"]).model_copy(update={"config_path": Path(hello["config_path"])})
    paths = Paths.from_settings(settings)
    for line in stdin:
        request_id = line.decode("ascii", "replace").strip()
        try:
            reply = {"status": 200, "body": lineage_json(paths, request_id)}
        except NotFoundError as e:
            reply = {"status": 404, "detail": str(e)}
        except ClockworkError as e:
            reply = {"status": 503, "detail": f"lineage unavailable: {e}"}
        except Exception as e:  # noqa: BLE001 - one bad lookup is answered, the worker lives on
            log.exception("lineage of %r failed", request_id)
            reply = {"status": 503, "detail": f"lineage unavailable: {type(e).__name__}: {e}"}
        stdout.write(orjson.dumps(reply) + b"\n")
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
