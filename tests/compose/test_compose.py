"""docker compose end to end, as a user would: up, curl /predict, push a retrain message, see a new version,
edit the pin on the host and see every replica swap without a restart and without a failed request, down. And
what the stack must not leave open: the Redis password is generated into a git-ignored 0600 file, no long-lived
process runs as root, what the services write belongs to the project folder's owner, Redis refuses a client
without the password. The stack (tests/compose/conftest.py) serves through nginx in front of two replicas;
tests/compose/test_replicas.py holds what is particular to the replicas.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from shared.schemas import parse_utc
from tests.compose.conftest import READING, REPLICAS, Traffic, deployment_rows, head, replica_instances, wait_for
from tests.conftest import ROOT

pytestmark = [pytest.mark.compose, pytest.mark.slow]

SECRET = Path(".secrets") / "redis_password"
# Seconds a replica may take, after noticing a new pin, to load and check the model and write its row.
SWAP_LOAD_S = 3.0


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
    wait_for(lambda: (models / "v2" / "metadata.json").is_file(), 300, "v2 registered", log)
    meta = json.loads((models / "v2" / "metadata.json").read_text())
    assert meta["trigger"]["message_id"] == "compose-1"
    # The image has no git binary: the commit comes from the .git folder copied into it (or the build argument).
    assert meta["git"]["commit"] == head()
    status = run("exec", "-T", "trainer", "python3", "-m", "services.trainer", "status", "compose-1")
    assert json.loads(status.stdout)["status"] == "done", status.stdout + status.stderr

    # Edit the pin on the host, as an editor that replaces the file would, with traffic running through nginx:
    # every replica swaps within one reload interval (plus the load and check of the new model), and no
    # request fails meanwhile.
    replicas = replica_instances(run, dest)
    assert len(replicas) == REPLICAS and all(replicas.values()), replicas
    cfg = dest / "config.yaml"
    reload_s = yaml.safe_load(cfg.read_text())["deployment"]["reload_interval_s"]
    with Traffic(url) as traffic:
        time.sleep(1)
        text = cfg.read_text()
        pinned = "model_version: v2" in text  # the trainer's gate promoted it already
        edited = time.time()
        if not pinned:
            tmp = dest / "config.yaml.new"
            tmp.write_text(text.replace("model_version: v1", "model_version: v2", 1))
            os.replace(tmp, cfg)

        def swapped() -> dict[str, float]:
            rows = [r for r in deployment_rows(dest) if (r["event"], r["version"]) == ("swap", "v2")]
            return {r["instance_id"]: parse_utc(r["time"]).timestamp() for r in rows}

        wait_for(lambda: set(replicas.values()) <= set(swapped()), 60, "every replica swaps to v2", log)
        done = max(swapped()[i] for i in replicas.values())
        time.sleep(2)
    assert traffic.results and not traffic.failures(), traffic.failures()
    assert {v for t, _, v, _ in traffic.results if t > done + 0.5} == {"v2"}
    if not pinned:
        assert all(swapped()[i] - edited <= reload_s + SWAP_LOAD_S for i in replicas.values()), (edited, swapped())
    rows = [r for r in deployment_rows(dest) if (r["event"], r["version"]) == ("swap", "v2")]
    assert all(r["previous_version"] == "v1" for r in rows) or pinned
    r = requests.post(f"{url}/predict", json=READING, timeout=5)
    assert r.json()["model_version"] == "v2"
    assert requests.get(f"{url}/model", timeout=3).json()["model_version"] == "v2"

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
            stack["image"],
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


def _words(container: str) -> set[str]:
    """'/cwtest1234_nginx_1' (compose v1) or '/cwtest1234-nginx-1' (v2) -> its parts, the service among them."""
    return set(re.split(r"[-_/]", container))


def test_no_long_lived_container_process_runs_as_root(stack):
    first = _processes(stack["run"])
    time.sleep(3)
    second = _processes(stack["run"])
    # A healthcheck is root for an instant before it drops; anything seen as uid 0 twice is a lasting process.
    root = {key: what for key, what in second.items() if what.split()[0] == "0" and first.get(key) == what}
    assert not root, f"processes running as root: {root}"
    names = {name for name, _ in second}
    assert len(names) >= 4 + REPLICAS, second  # redis, trainer, the inference replicas, nginx, monitor
    # The services run as the project folder's owner; Redis as its image's own unprivileged user; nginx as
    # nobody (docker-compose.yml `user:`, it needs nothing of the project folder).
    services = {key: what for key, what in second.items() if not {"redis", "nginx"} & _words(key[0])}
    services = {key: what for key, what in services.items() if key in first}
    assert services and all(what.split()[0] == str(stack["owner"]) for what in services.values()), services
    nginx = {key: what for key, what in second.items() if "nginx" in _words(key[0])}
    assert nginx and all(what.split()[0] == "65534" for what in nginx.values()), nginx


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
