"""The code commit that produced an artifact, with or without a .git folder.

Inside a container there is no .git: the image carries the commit in CLOCKWORK_GIT_COMMIT (a build
argument) and CLOCKWORK_GIT_DIRTY.

`git_info` is cached per process (prep writes many manifest entries in one run). A long-running process
whose code may change under it calls `refresh_git_info()` before each unit of work: the retrain worker does
so per job, so a model records the commit and dirty flag as they are when it is trained.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

COMMIT_ENV = "CLOCKWORK_GIT_COMMIT"
DIRTY_ENV = "CLOCKWORK_GIT_DIRTY"
CODE_PATHS = ("shared", "services", "config.yaml", "requirements.txt", "Dockerfile.base")


@functools.lru_cache(maxsize=8)
def git_info(repo: str | os.PathLike | None = None) -> dict:
    """{"commit": sha or "unknown", "dirty": bool or None}. Dirty looks at code paths only, not volumes."""
    if os.environ.get(COMMIT_ENV):
        dirty_env = os.environ.get(DIRTY_ENV, "")
        return {
            "commit": os.environ[COMMIT_ENV],
            "dirty": dirty_env.lower() in ("1", "true", "yes") if dirty_env else None,
        }
    root = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        # No git binary (a slim image): read the commit from the .git folder copied into it.
        return {"commit": _read_head(root / ".git"), "dirty": None}


def refresh_git_info() -> None:
    """Forget the cached answers: the next `git_info()` reads the commit and dirty flag again."""
    git_info.cache_clear()


def _read_head(git_dir: Path) -> str:
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        ref_file = git_dir / ref
        if ref_file.is_file():
            return ref_file.read_text().strip()
        packed = git_dir / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    except OSError:
        pass
    return "unknown"
