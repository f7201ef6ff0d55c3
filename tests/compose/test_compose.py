"""docker compose end to end, as a user would: up, curl /predict, push a retrain message, see a new version,
edit the pin on the host and see the served version swap without a restart, down. And what the stack must not
leave open: the Redis password is generated into a git-ignored 0600 file, no long-lived process runs as root,
what the services write belongs to the project folder's owner, Redis refuses a client without the password.

Runs only when a Docker engine answers (../shared/tools/docker-sandbox gives one on these machines).
The project is copied to a temporary folder so the repository's own volume is untouched; run as root, the copy
is given to an unprivileged uid (PROJECT_UID) so that "files belong to the folder's owner" is tested for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.compose, pytest.mark.slow]

# The owner of the copied project when the tests run as root (a typical first host user).
PROJECT_UID = PROJECT_GID = 1000
SECRET = Path(".secrets") / "redis_password"


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


def _head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


@pytest.fixture(scope="module")
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
    env = {**os.environ, "CLOCKWORK_PORT": str(port), "COMPOSE_PROJECT_NAME": project}
    if (ROOT / ".git").is_dir():
        shutil.copytree(ROOT / ".git", dest / ".git")
    else:  # a git worktree: its .git is a pointer the image cannot follow; hand the commit over instead
        env["GIT_COMMIT"] = _head()
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
        _wait(
            lambda: requests.get(f"{url}/ready", timeout=3).status_code == 200,
            420,
            "inference /ready",
            dest.parent / "compose.log",
        )
        yield {
            "dest": dest,
            "url": url,
            "run": run,
            "up": up,
            "owner": dest.stat().st_uid,
            "log": dest.parent / "compose.log",
        }
    finally:
        run("down", "-v", "--remove-orphans", timeout=300, check=False)
        up.wait(60)
        subprocess.run(["rm", "-rf", str(dest.parent)], check=False)


def _wait(predicate, timeout, what, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except requests.RequestException:
            pass
        time.sleep(2)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


READING = {
    "Type": "L",
    "Air temperature [K]": 298.9,
    "Process temperature [K]": 309.1,
    "Rotational speed [rpm]": 2861,
    "Torque [Nm]": 4.6,
    "Tool wear [min]": 143,
}


def test_compose_up_serves_retrains_and_swaps_on_pin_edit(stack):
    url, dest, run, log = stack["url"], stack["dest"], stack["run"], stack["log"]

    r = requests.post(f"{url}/predict", json=READING, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "v1" and 0.0 <= body["failure_probability"] <= 1.0

    # The README's way: the trainer's CLI reads the Redis password from its file; none on the command line.
    pushed = run(
        "exec",
        "-T",
        "trainer",
        "python3",
        "-m",
        "services.trainer",
        "push",
        "--id",
        "compose-1",
        "--reason",
        "compose test",
    )
    assert pushed.stdout.strip() == "compose-1", pushed.stdout + pushed.stderr
    models = dest / "volumes" / "models"
    _wait(lambda: (models / "v2" / "metadata.json").is_file(), 300, "v2 registered", log)
    meta = json.loads((models / "v2" / "metadata.json").read_text())
    assert meta["trigger"]["message_id"] == "compose-1"
    # The image has no git binary: the commit comes from the .git folder copied into it (or the build argument).
    assert meta["git"]["commit"] == _head()
    status = run("exec", "-T", "trainer", "python3", "-m", "services.trainer", "status", "compose-1")
    assert json.loads(status.stdout)["status"] == "done", status.stdout + status.stderr

    # Edit the pin on the host, as an editor that replaces the file would.
    cfg = dest / "config.yaml"
    text = cfg.read_text()
    pinned = "model_version: v2" in text
    if not pinned:
        tmp = dest / "config.yaml.new"
        tmp.write_text(text.replace("model_version: v1", "model_version: v2", 1))
        os.replace(tmp, cfg)
    _wait(lambda: requests.get(f"{url}/model", timeout=3).json().get("model_version") == "v2", 60, "swap to v2", log)
    r = requests.post(f"{url}/predict", json=READING, timeout=5)
    assert r.json()["model_version"] == "v2"
    deploy_log = (dest / "volumes" / "logs" / "deployment_log.csv").read_text()
    assert ",swap,v2,v1," in deploy_log or pinned

    # `docker compose exec` starts as root; the config.yaml it writes must still be the folder owner's.
    back = run("exec", "-T", "inference", "python3", "-m", "services.inference", "rollback", check=False)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "model_version: v1" in cfg.read_text()
    assert cfg.stat().st_uid == stack["owner"]


def test_redis_password_is_generated_into_a_private_git_ignored_file(stack):
    dest = stack["dest"]
    secret = dest / SECRET
    assert secret.is_file() and len(secret.read_text().strip()) >= 32
    st = secret.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, stack["owner"])
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SECRET)], cwd=ROOT)
    assert ignored.returncode == 0, f"git does not ignore {SECRET}"
    password = secret.read_text().strip()
    assert password not in stack["log"].read_text()
    assert password not in (dest / "config.yaml").read_text()
    # Not baked into the image.
    image = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            "clockwork:local",
            "-c",
            "ls -a /app; ls -a /app/.secrets 2>/dev/null; true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert image.returncode == 0 and "redis_password" not in image.stdout and ".secrets" not in image.stdout


def _processes(run) -> dict[tuple[str, str], str]:
    """(container, pid) -> 'uid args' for every process of every running container of the stack."""
    seen = {}
    for cid in run("ps", "-q").stdout.split():
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}} {{.Name}}", cid], capture_output=True, text=True
        ).stdout.split()
        if not state or state[0] != "true":
            continue
        top = subprocess.run(["docker", "top", cid, "-eo", "uid,pid,args"], capture_output=True, text=True)
        for line in top.stdout.splitlines()[1:]:
            uid, pid, args = line.split(None, 2)
            seen[(state[1], pid)] = f"{uid} {args}"
    return seen


def test_no_long_lived_container_process_runs_as_root(stack):
    first = _processes(stack["run"])
    time.sleep(3)
    second = _processes(stack["run"])
    # A healthcheck is root for an instant before it drops; anything seen as uid 0 twice is a lasting process.
    root = {key: what for key, what in second.items() if what.split()[0] == "0" and first.get(key) == what}
    assert not root, f"processes running as root: {root}"
    names = {name for name, _ in second}
    assert len(names) >= 4, second  # redis, trainer, inference, monitor
    # The services run as the project folder's owner; Redis as its image's own unprivileged user.
    services = {key: what for key, what in second.items() if "redis" not in key[0] and key in first}
    assert services and all(what.split()[0] == str(stack["owner"]) for what in services.values()), services


def test_files_written_by_the_services_belong_to_the_project_folder_owner(stack):
    dest, owner = stack["dest"], stack["owner"]
    written = [p for p in (dest / "volumes").rglob("*")] + [dest / SECRET, dest / "config.yaml"]
    assert any(p.name.endswith(".jsonl") for p in written)  # prediction logs were written at least
    foreign = [f"{p.relative_to(dest)} uid {p.stat().st_uid}" for p in written if p.stat().st_uid != owner]
    assert not foreign, f"not owned by uid {owner}: {foreign[:10]}"


def test_redis_is_unpublished_and_refuses_a_client_without_the_password(stack):
    run = stack["run"]
    cid = run("ps", "-q", "redis").stdout.strip()
    published = subprocess.run(["docker", "port", cid], capture_output=True, text=True, check=True)
    assert published.stdout.strip() == "", published.stdout
    anon = run("exec", "-T", "redis", "redis-cli", "LLEN", "clockwork:retrain", check=False)
    assert "NOAUTH" in anon.stdout + anon.stderr
    wrong = run("exec", "-T", "redis", "redis-cli", "-a", "clockwork-local", "--no-auth-warning", "PING", check=False)
    assert "PONG" not in wrong.stdout and "WRONGPASS" in wrong.stdout + wrong.stderr
    # From the host to Redis's bridge address, as an attacker on the machine would.
    import redis

    ips = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", cid],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ips
    for password in (None, "clockwork-local"):
        client = redis.Redis(host=ips[0], port=6379, password=password, socket_connect_timeout=3)
        with pytest.raises(redis.exceptions.RedisError):
            client.llen("clockwork:retrain")
