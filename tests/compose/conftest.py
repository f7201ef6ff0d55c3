"""The compose stack the tests in tests/compose share (one `docker compose up` per test session), and helpers.

Runs only when a Docker engine answers (../shared/tools/docker-sandbox gives one on these machines).
The project is copied to a temporary folder so the repository's own volume is untouched; run as root, the copy
is given to an unprivileged uid (PROJECT_UID) so that "files belong to the folder's owner" is tested for real.
The image is tagged with the run's own compose project name (CLOCKWORK_IMAGE_TAG), so two checkouts testing on
one engine never run each other's code, and removed at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

# The owner of the copied project when the tests run as root (a typical first host user).
PROJECT_UID = PROJECT_GID = 1000
REPLICAS = 2  # docker-compose.yml: inference deploy.replicas

READING = {
    "Type": "L",
    "Air temperature [K]": 298.9,
    "Process temperature [K]": 309.1,
    "Rotational speed [rpm]": 2861,
    "Torque [Nm]": 4.6,
    "Tool wear [min]": 143,
}


def _engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _compose_cmd() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*cmd, "version"], capture_output=True, timeout=20).returncode == 0:
                return cmd
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    if not _engine() or _compose_cmd() is None:
        pytest.skip("no Docker engine answers (run ../shared/tools/docker-sandbox)")
    dest = tmp_path_factory.mktemp("compose") / "clockwork"
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    port = free_port()
    project = f"cwtest{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CLOCKWORK_PORT": str(port), "COMPOSE_PROJECT_NAME": project, "CLOCKWORK_IMAGE_TAG": project}
    if (ROOT / ".git").is_dir():
        shutil.copytree(ROOT / ".git", dest / ".git")
    else:  # a git worktree: its .git is a pointer the image cannot follow; hand the commit over instead
        env["GIT_COMMIT"] = head()
    if os.geteuid() == 0:
        _chown_tree(dest.parent, PROJECT_UID, PROJECT_GID)
    compose = [*_compose_cmd(), "-p", project]

    def run(*args, timeout=600, check=True):
        return subprocess.run(
            [*compose, *args], cwd=dest, env=env, capture_output=True, text=True, timeout=timeout, check=check
        )

    up = subprocess.Popen(
        [*compose, "up", "--build"],
        cwd=dest,
        env=env,
        stdout=open(dest.parent / "compose.log", "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: requests.get(f"{url}/ready", timeout=3).status_code == 200,
            420,
            "inference /ready through nginx",
            dest.parent / "compose.log",
        )
        yield {
            "dest": dest,
            "url": url,
            "port": port,
            "run": run,
            "up": up,
            "owner": dest.stat().st_uid,
            "log": dest.parent / "compose.log",
            "image": f"clockwork:{project}",
        }
    finally:
        run("down", "-v", "--remove-orphans", timeout=300, check=False)
        up.wait(60)
        subprocess.run(["docker", "rmi", f"clockwork:{project}"], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(dest.parent)], check=False)


def wait_for(predicate, timeout, what, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except requests.RequestException:
            pass
        time.sleep(1)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def deployment_rows(dest: Path) -> list[dict[str, str]]:
    path = dest / "volumes" / "logs" / "deployment_log.csv"
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.exists() else []


def replica_instances(run, dest: Path) -> dict[str, str]:
    """container id -> instance id of every running inference replica (its container hostname names it:
    services/inference/logs.py default_instance_id is <hostname>-<pid>; its `start` row in the deployment log)."""
    found = {}
    starts = [row["instance_id"] for row in deployment_rows(dest) if row["event"] == "start"]
    for cid in run("ps", "-q", "inference").stdout.split():
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}} {{.Config.Hostname}}", cid], capture_output=True, text=True
        ).stdout.split()
        if len(state) == 2 and state[0] == "true":
            ids = [i for i in starts if i == state[1] or i.startswith(f"{state[1]}-")]
            found[cid] = ids[-1] if ids else ""
    return found


def logged_request_ids(dest: Path) -> dict[str, list[str]]:
    """instance id -> the request ids in its prediction log (logs/predictions/<instance>.jsonl)."""
    out = {}
    for path in sorted((dest / "volumes" / "logs" / "predictions").glob("*.jsonl")):
        lines = path.read_text().splitlines()
        out[path.stem] = [json.loads(line)["request_id"] for line in lines if line.strip()]
    return out


class Traffic:
    """Threads that POST /predict through nginx on kept-alive connections until stopped, recording every
    outcome: (start time, HTTP status or the exception's name, model_version or '', request_id or '').
    keep_alive=False opens a connection per request: an nginx reload (deploy/nginx/run.sh, when replica
    addresses change) closes idle client connections, and a client sending on one at that instant gets no
    answer; that is the client's side of a reload, not a failed upstream (docs/scaling.md)."""

    def __init__(self, url: str, *, threads: int = 2, keep_alive: bool = True) -> None:
        self.url = url
        self.headers = {} if keep_alive else {"Connection": "close"}
        self.results: list[tuple[float, int | str, str, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.time()
            try:
                r = session.post(f"{self.url}/predict", json=READING, headers=self.headers, timeout=10)
                body = r.json() if r.status_code == 200 else {}
                self.results.append((started, r.status_code, body.get("model_version", ""), body.get("request_id", "")))
            except (requests.RequestException, ValueError) as e:
                self.results.append((started, type(e).__name__, "", ""))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def failures(self) -> Counter:
        return Counter(status for _, status, _, _ in self.results if status != 200)
