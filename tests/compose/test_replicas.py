"""Serving over replicas: nginx (the only published service) in front of two inference replicas in compose.

Through nginx, requests reach both replicas, each answer is logged exactly once, in the log file of the replica
that answered; a replica added while traffic runs is found through Docker's DNS (deploy/nginx/run.sh) and one
removed costs no request. The pin swap of every replica is in test_compose.py; the stack is conftest.py's.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pytest
import requests

from tests.compose.conftest import REPLICAS, Traffic, logged_request_ids, replica_instances, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.slow]


def test_only_nginx_and_the_console_are_published_and_only_on_the_loopback(stack):
    published = {}
    for cid in stack["run"]("ps", "-q").stdout.split():
        name = subprocess.run(["docker", "inspect", "-f", "{{.Name}}", cid], capture_output=True, text=True).stdout
        ports = subprocess.run(["docker", "port", cid], capture_output=True, text=True).stdout.split("\n")
        published[name.strip()] = [p for p in ports if p.strip()]
    exposed = {name: ports for name, ports in published.items() if ports}
    assert sorted(n.rsplit("_", 2)[-2] for n in exposed) == ["console", "nginx"], published
    nginx = {name: ports for name, ports in exposed.items() if "nginx" in name}
    assert next(iter(nginx.values())) == [f"8080/tcp -> 127.0.0.1:{stack['port']}"], nginx
    assert all(p.split(" -> ")[1].startswith("127.0.0.1:") for ports in exposed.values() for p in ports), exposed


def test_requests_reach_both_replicas_and_each_answer_is_logged_once_by_its_replica(stack):
    url, dest = stack["url"], stack["dest"]
    replicas = replica_instances(stack["run"], dest)
    assert len(replicas) == REPLICAS and all(replicas.values()), replicas
    before = {instance: set(ids) for instance, ids in logged_request_ids(dest).items()}

    with Traffic(url, threads=4) as traffic:
        time.sleep(4)
    answered = [request_id for _, status, _, request_id in traffic.results if status == 200]
    assert len(answered) >= 100 and not traffic.failures(), (len(answered), traffic.failures())

    new = {i: [r for r in ids if r not in before.get(i, set())] for i, ids in logged_request_ids(dest).items()}
    logged = Counter(r for ids in new.values() for r in ids)
    # Every answer logged, none twice, nothing logged that was not answered (a retried POST never was).
    assert logged == Counter(answered)
    shares = {i: len(ids) for i, ids in new.items() if ids}
    assert set(shares) == set(replicas.values()), shares
    assert min(shares.values()) >= len(answered) / (REPLICAS * 4), shares  # round robin, roughly even

    # Each replica says who it is; nginx sends keep-alive traffic to both.
    seen = {requests.get(f"{url}/health", timeout=3).json()["instance_id"] for _ in range(8)}
    assert seen == set(replicas.values())


def test_a_replica_added_is_found_and_one_removed_costs_no_request(stack):
    url, dest, run, log = stack["url"], stack["dest"], stack["run"], stack["log"]
    old = set(replica_instances(run, dest).values())

    def scale(n: int) -> None:
        run("up", "-d", "--no-deps", "--no-recreate", "--scale", f"inference={n}", "inference", timeout=300)

    # A connection per request: nginx reloads when the addresses change (see Traffic).
    with Traffic(url, keep_alive=False) as traffic:
        scale(REPLICAS + 1)
        added = wait_for(
            lambda: (set(replica_instances(run, dest).values()) - old - {""}) or None, 120, "a third replica", log
        )
        (instance,) = added
        # nginx learns the new address from Docker's DNS (deploy/nginx/run.sh, every RESOLVE_INTERVAL_S).
        wait_for(lambda: logged_request_ids(dest).get(instance), 60, f"traffic on the new replica {instance}", log)
        scale(REPLICAS)
        wait_for(lambda: len(replica_instances(run, dest)) == REPLICAS, 60, "back to two replicas", log)
        time.sleep(8)  # past the next DNS check and nginx reload
    assert traffic.results and not traffic.failures(), traffic.failures()
    assert set(replica_instances(run, dest).values()) == old


def test_the_monitors_replay_and_the_smoke_test_go_through_nginx(stack):
    run, dest = stack["run"], stack["dest"]
    before = sum(len(ids) for ids in logged_request_ids(dest).values())
    # The monitor's replay URL is nginx's (CLOCKWORK_REPLAY_URL in docker-compose.yml): no --url here.
    replay = run(
        "exec", "-T", "monitor", "python3", "-m", "services.monitor", "replay",
        "--dataset", "natural", "--limit", "40", "--rate", "200", "--no-progress",
        check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert sum(len(ids) for ids in logged_request_ids(dest).values()) >= before + 40
    smoke = run(
        "exec", "-T", "monitor", "python3", "-m", "services.inference.smoke", "--url", "http://nginx:8080", check=False
    )  # fmt: skip
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
